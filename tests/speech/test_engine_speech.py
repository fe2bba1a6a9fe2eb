"""Speech through the public :class:`lipcore.Engine`: whole utterances, text deltas, the
mouth's lead, and every kind of bad input."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from lipcore.engine import Engine, EngineSettings
from lipcore.errors import InputError, LimitError, UnknownVoiceError
from lipcore.interfaces import PhonemeTiming

from .conftest import deltas, run


async def speak(
    text: str | AsyncIterator[str], voice: str = "de", **kwargs: object
) -> tuple[list[PhonemeTiming], list[float], float]:
    engine = Engine()
    try:
        utt = await engine.utterance(text, voice=voice, **kwargs)  # type: ignore[arg-type]
        async for _ in utt:
            pass
        return list(utt.phonemes), [f.pts_ms for f in utt.frames], utt.audio_ms
    finally:
        await engine.aclose()


def names(phonemes: list[PhonemeTiming]) -> list[str]:
    return [p.phoneme for p in phonemes]


def test_engine_speaks_and_frames_cover_the_audio_at_the_fps() -> None:
    async def body() -> None:
        engine = Engine()
        utt = await engine.utterance("Hallo, wie geht es dir?", voice="de", fps=50, lead_ms=0)
        steps = [s async for s in utt]
        assert steps[-1].chunk.final
        assert sum(len(s.frames) for s in steps) == len(utt.frames)
        pts = [f.pts_ms for f in utt.frames]
        assert all(b > a for a, b in itertools.pairwise(pts))
        assert pts[0] == 0.0 and pts[-1] >= utt.audio_ms  # the mouth closes after the audio
        assert all(abs(b - a - 20.0) < 1e-6 for a, b in itertools.pairwise(pts))
        assert utt.frames[-1].weights == {}
        # Frames come with the audio, not all at the end.
        assert sum(1 for s in steps[: len(steps) // 2] if s.frames) > 3
        await engine.aclose()

    run(body())


def test_the_lead_shifts_frames_earlier_and_keeps_pts_increasing() -> None:
    _, no_lead, _ = run(speak("Mama", lead_ms=0, fps=50))
    _, lead, _ = run(speak("Mama", lead_ms=40, fps=50))
    assert lead[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(lead))
    # Interior frames are exactly 40 ms earlier; those before 0 collapse into one at 0.
    shifted = [p - 40.0 for p in no_lead if p - 40.0 > 0]
    # espeak's audio length varies by a few samples between calls (±0.5 ms here), which can
    # move the last frame (speech end + look-ahead) across a frame boundary: one frame more
    # or less at the end is not the lead's doing.
    assert abs(len(lead[1:]) - len(shifted)) <= 1
    n = min(len(lead) - 1, len(shifted))
    assert lead[1 : n + 1] == pytest.approx(shifted[:n])


def test_text_deltas_through_the_engine() -> None:
    whole, _, _ = run(speak("Guten Morgen. Wie geht es?"))
    streamed, frames, _ = run(speak(deltas("Guten ", "Mor", "gen. Wie", " geht es?")))
    assert names(streamed) == names(whole)
    assert all(b > a for a, b in itertools.pairwise(frames))


def test_english_voice_by_language_code() -> None:
    ph, _, _ = run(speak("thank you", voice="en-gb"))
    assert names(ph)[0] == "θ"


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00\x07", "😀🎉", "<b></b>", "...!?"])
def test_nothing_speakable_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="empty"):
        run(speak(text))


def test_too_long_text_is_a_limit_error_naming_the_limit() -> None:
    with pytest.raises(LimitError, match="100000 characters; the limit is 5000"):
        run(speak("a" * 100_000))
    limit = Engine(settings=EngineSettings(max_text_chars=20))

    async def body() -> None:
        await limit.utterance("x" * 21, voice="de")

    with pytest.raises(LimitError, match="limit is 20"):
        run(body())


def test_unknown_voice_or_language_lists_the_available_voices() -> None:
    for voice in ("klingon", "xx-yy"):
        with pytest.raises(UnknownVoiceError) as err:
            run(speak("Hallo", voice=voice))
        msg = str(err.value)
        assert repr(voice) in msg and "available:" in msg and "de, " in msg and "en-us" in msg


@pytest.mark.parametrize(
    "dirty",
    [
        "Hallo\x00\x07 Welt",  # control characters are removed
        "Hallo\u200b Welt\u202e",  # zero-width and bidi format characters are removed
        "Hallo 😀 Welt 🎉",  # emoji are dropped
        "<speak><b>Hallo</b> Welt</speak>",  # markup tags are dropped, their text is spoken
        "Hallo\n\n\tWelt",  # line breaks and tabs are spaces
    ],
)
def test_dirty_text_is_spoken_as_its_clean_text(dirty: str) -> None:
    clean, _, _ = run(speak("Hallo Welt"))
    got, _, _ = run(speak(dirty))
    assert names(got) == names(clean)


def test_bad_options_and_fps_are_input_errors() -> None:
    with pytest.raises(InputError, match="rate=1000 is out of range"):
        run(speak("Hallo", options={"rate": 1000}))
    with pytest.raises(InputError, match="fps=500"):
        run(speak("Hallo", fps=500))


def test_control_characters_in_deltas_are_not_spoken() -> None:
    clean, _, _ = run(speak(deltas("Hallo Welt.")))
    dirty, _, _ = run(speak(deltas("Hal\x00lo", " \x1bWelt", ".")))
    assert names(dirty) == names(clean)


def test_provisional_frames_cover_the_first_audio_until_frames_are_final() -> None:
    """Short first chunks (a vendor's 100 ms pieces): the first steps carry no final frame, so
    they carry a guess for their audio; each guessed pts later gets its final frame, and no
    guess follows the first final frame."""
    from lipcore.default_plugins.espeak import EspeakSource
    from lipcore.default_plugins.mapper import DefaultVisemeMapper
    from lipcore.engine import Utterance
    from lipcore.testing import ReplayTTSSource

    async def body() -> None:
        replay = await ReplayTTSSource.record(
            EspeakSource(), "Mama kauft Wurst.", voice="de", chunk_ms=100.0
        )
        utt = Utterance(replay, DefaultVisemeMapper(), "Mama kauft Wurst.", voice="de",
                        language="de", fps=30.0, lead_ms=40.0)
        steps = [s async for s in utt]
        assert not steps[0].frames and steps[0].provisional
        # The first guess reaches the end of the first chunk's audio (less the mouth's lead).
        assert steps[0].provisional[-1].pts_ms >= steps[0].chunk.end_ms - 40.0 - 1000.0 / 30
        first_final = next(i for i, s in enumerate(steps) if s.frames)
        assert all(not s.provisional for s in steps[first_final:])
        guessed = [f.pts_ms for s in steps for f in s.provisional]
        assert guessed == sorted(set(guessed))  # each guessed once, in order
        final = {round(f.pts_ms, 6) for f in utt.frames}
        assert {round(p, 6) for p in guessed} <= final

    run(body())


def test_an_utterance_made_not_to_record_keeps_nothing_and_sends_the_same() -> None:
    """The server's utterances keep no timings or frames (they were garbage-collector work at
    hundreds of sessions); what they send is the same."""
    from lipcore.default_plugins.espeak import EspeakSource
    from lipcore.default_plugins.mapper import DefaultVisemeMapper
    from lipcore.engine import Utterance
    from lipcore.testing import ReplayTTSSource

    async def body() -> None:
        replay = await ReplayTTSSource.record(EspeakSource(), "Mama kauft Wurst.", voice="de")
        sent = {}
        utts = {}
        for record in (True, False):
            utt = Utterance(replay, DefaultVisemeMapper(), "Mama kauft Wurst.", voice="de",
                            language="de", fps=30.0, lead_ms=40.0, record=record)
            sent[record] = [(f.pts_ms, dict(f.weights)) async for s in utt for f in s.frames]
            utts[record] = utt
        assert sent[False] == sent[True] and len(sent[True]) > 20
        assert utts[True].frames and utts[True].phonemes
        assert utts[False].frames == [] and utts[False].phonemes == []
        assert utts[False].chars == [] and utts[False].audio_ms == utts[True].audio_ms

    run(body())
