"""The server's fast viseme-event encoder writes the same JSON document as the reference path
(``VisemeFrame.to_event`` + ``json.dumps``), and what it writes passes the protocol's models."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from lipcore.interfaces import VisemeFrame
from lipcore.server.protocol import DEFAULT_CLASSES, SERVER_MESSAGES, encode_viseme, encode_visemes

weights = st.dictionaries(
    st.sampled_from(DEFAULT_CLASSES[1:]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    max_size=5,
).filter(lambda w: sum(w.values()) <= 1.0)
frames = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), weights),
    min_size=1,
    max_size=8,
    unique_by=lambda t: round(t[0], 1),
).map(lambda fs: [VisemeFrame(p, w) for p, w in sorted(fs, key=lambda t: round(t[0], 1))])


def reference(utterance: int, fs: list[VisemeFrame], provisional: bool) -> dict[str, object]:
    events = [f.to_event() for f in fs]
    msg: dict[str, object] = {
        "type": "visemes",
        "utterance": utterance,
        "frames": [{"pts_ms": e["pts_ms"], "weights": e["weights"]} for e in events],
    }
    if provisional:
        msg["provisional"] = True
    return msg


@given(fs=frames, utterance=st.integers(min_value=1, max_value=2**31), provisional=st.booleans())
def test_batched_event_is_the_reference_document(
    fs: list[VisemeFrame], utterance: int, provisional: bool
) -> None:
    text = encode_visemes(utterance, fs, provisional=provisional)
    doc = json.loads(text)
    assert doc == reference(utterance, fs, provisional)
    SERVER_MESSAGES["visemes"].model_validate(doc)
    assert " " not in text  # compact, like the rest of the server's messages


@given(fs=frames, utterance=st.integers(min_value=1, max_value=2**31))
def test_single_event_is_the_contract_event(fs: list[VisemeFrame], utterance: int) -> None:
    for f in fs:
        doc = json.loads(encode_viseme(utterance, f))
        assert doc == {**f.to_event(), "utterance": utterance}
        SERVER_MESSAGES["viseme"].model_validate(doc)


def test_unusual_class_names_are_quoted() -> None:
    doc = json.loads(encode_visemes(1, [VisemeFrame(0.0, {'a"b\\': 0.5})]))
    assert doc["frames"][0]["weights"] == {'a"b\\': 0.5}


class _SilentTransport:
    """A client that never reads: nothing leaves the send queue."""

    async def send_text(self, text: str) -> None:  # pragma: no cover - never drained here
        raise AssertionError("not reached")

    send_bytes = send_text


def test_a_congested_queue_sheds_the_frames_of_inline_audio_and_keeps_the_sound() -> None:
    from lipcore.server.metrics import Usage
    from lipcore.server.outbox import Outbox, OutMessage
    from lipcore.server.protocol import AUDIO_KIND, pack_audio_visemes, unpack_frame

    usage = Usage()
    gave_up: list[str] = []
    box = Outbox(_SilentTransport(), max_messages=100, max_bytes=9000,  # type: ignore[arg-type]
                 on_hopeless=gave_up.append, usage=usage)
    pcm = bytes(range(256)) * 4  # 1 KiB of "audio" per chunk
    event = encode_visemes(1, [VisemeFrame(33.3 * i, {"AI": 0.5, "O": 0.25}) for i in range(3)])
    for i in range(8):
        frame = pack_audio_visemes(event, pcm, utterance=1, pts_ms=100.0 * i)
        box.put(OutMessage(None, frame, 1, inline=True))
    assert not gave_up and len(box) == 8  # every chunk's audio is still queued ...
    kinds = [unpack_frame(it.data)[0].kind for it in box._items if it.data]
    assert kinds.count(AUDIO_KIND) >= 1  # ... the oldest without their frames
    for it in box._items:
        assert it.data is not None and it.data.endswith(pcm)
    assert box.queued_bytes == sum(len(it.data or b"") for it in box._items) <= 9000
    assert usage.dropped_viseme_messages == kinds.count(AUDIO_KIND)


def test_tune_gc_freezes_the_start_up_heap_and_sets_small_young_generations() -> None:
    import gc

    from lipcore.server.app import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (100, 5, 10_000)
        assert gc.get_freeze_count() > 1000  # the imported modules, the app, the engine
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
