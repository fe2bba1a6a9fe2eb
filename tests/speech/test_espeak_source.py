"""The built-in ``espeak`` TTS source with real speech: streaming, timings, voices, options,
cancellation, the event loop, and text given as deltas."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from lipcore.default_plugins import espeak as espeak_plugin
from lipcore.default_plugins.espeak import EspeakSource, TextSegmenter
from lipcore.default_plugins.mapper import g2p_word
from lipcore.errors import InputError, UnknownVoiceError
from lipcore.interfaces import TTSChunk
from lipcore.speech import _espeak

from .conftest import audio_ms, collect, deltas, phonemes_of, run

GERMAN = "Hallo, wie geht es dir? Mir geht es gut, danke."
ENGLISH = "Hello, how are you today? I am fine, thank you."
LONG_DE = " ".join(
    [
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
        "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg.",
        "Im dunklen Wald hinter den sieben Bergen wohnt eine alte Frau.",
        "Sie backt jeden Morgen Brot und verkauft es auf dem Markt.",
        "Am Abend sitzt sie vor dem Haus und schaut den Sternen zu.",
    ]
)


def check_chunks(chunks: list[TTSChunk]) -> None:
    """Invariants every utterance must hold."""
    assert chunks, "no chunks"
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.sample_rate == 22050 for c in chunks)
    # One continuous timeline: each chunk starts where the previous one ended.
    for a, b in itertools.pairwise(chunks):
        assert b.pts_ms == pytest.approx(a.end_ms, abs=1e-6)
    assert chunks[0].pts_ms == 0.0
    total = audio_ms(chunks)
    ph = phonemes_of(chunks)
    assert ph, "no phoneme timings"
    for p in ph:
        assert 0.0 <= p.start_ms <= p.end_ms <= total + 1e-6, p
        assert p.phoneme.strip()
    starts = [p.start_ms for p in ph]
    assert starts == sorted(starts), "phoneme starts are not monotonic"
    for a, b in itertools.pairwise(ph):
        assert a.end_ms <= b.start_ms + 1e-6, (a, b)
    words = [p.word for p in ph]
    assert words == sorted(words) and words[0] == 0


@pytest.mark.parametrize(
    ("voice", "text", "last_word"),
    # espeak speaks English "I am" as one word (no event for "am"); the last phoneme is
    # still the text's own last word's (10 words: index 9).
    [("de", GERMAN, 9), ("en-us", ENGLISH, 9)],
)
def test_speaks_with_monotonic_timings_inside_the_audio(
    source: EspeakSource, voice: str, text: str, last_word: int
) -> None:
    chunks = run(collect(source.synthesize(text, voice=voice)))
    check_chunks(chunks)
    pcm = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2")
    assert pcm.size / 22050 > 1.5  # real speech, seconds of it
    assert np.abs(pcm).max() > 3000  # not silence
    # Audio is streamed as the synthesizer delivers its buffers: many chunks of ≤ 60 ms.
    assert len(chunks) > 20
    assert max(c.duration_ms for c in chunks) <= 61
    assert phonemes_of(chunks)[-1].word == last_word


def test_phoneme_timings_line_up_with_the_audio(source: EspeakSource) -> None:
    # "Mama": the lips close for each m; the signal energy there is far lower than in the vowel.
    chunks = run(collect(source.synthesize("Mama.", voice="de")))
    pcm = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2").astype(np.float64)
    ph = phonemes_of(chunks)
    assert [p.phoneme for p in ph] == ["m", "ˈɑ", "m", "ɑː"]

    def rms(p: object) -> float:
        a = int(p.start_ms * 22.05)  # type: ignore[attr-defined]
        b = int(p.end_ms * 22.05)  # type: ignore[attr-defined]
        return float(np.sqrt(np.mean(pcm[a:b] ** 2)))

    assert rms(ph[1]) > 1.5 * rms(ph[2])


def test_first_chunk_comes_before_the_text_is_synthesized(source: EspeakSource) -> None:
    # One long clause (a single espeak_Synth call): when the first chunk arrives, the worker
    # thread is still inside espeak_Synth, holding the library lock.
    text = " ".join(["und dann lief der kleine Hund immer weiter über die Wiese"] * 4)

    async def body() -> bool:
        agen = source.synthesize(text, voice="de", options={"rate": 80})
        await agen.__anext__()
        busy = not _espeak.LOCK.acquire(blocking=False)
        if not busy:
            _espeak.LOCK.release()
        await agen.aclose()  # type: ignore[attr-defined]
        return busy

    assert run(body())


def test_voices_list_real_espeak_voices_with_languages(source: EspeakSource) -> None:
    voices = {v.id: v for v in run(source.voices())}
    for vid, lang in [("de", "de"), ("en-us", "en-us"), ("en", "en-gb"), ("fr", "fr-fr")]:
        assert voices[vid].language == lang
    assert {"es", "it"} <= voices.keys()
    assert voices["de"].name == "German"
    assert not any(v.startswith("mb-") for v in voices)  # no mbrola (not shipped)


def test_a_language_code_selects_its_voice(source: EspeakSource) -> None:
    assert run(source.resolve("en-gb")).id == "en"
    assert run(source.resolve("EN_us")).id == "en-us"


def test_unknown_voice_error_lists_the_available_ones(source: EspeakSource) -> None:
    async def body() -> None:
        await collect(source.synthesize("Hallo", voice="klingon"))

    with pytest.raises(UnknownVoiceError) as err:
        run(body())
    msg = str(err.value)
    assert "'klingon'" in msg and "available:" in msg
    assert " de," in msg and "en-us" in msg


def test_rate_changes_the_duration(source: EspeakSource) -> None:
    slow = run(collect(source.synthesize(GERMAN, voice="de", options={"rate": 100})))
    fast = run(collect(source.synthesize(GERMAN, voice="de", options={"rate": 300})))
    check_chunks(slow)
    check_chunks(fast)
    assert audio_ms(slow) > 2.0 * audio_ms(fast)
    # Same phonemes, just faster.
    assert [p.phoneme for p in phonemes_of(slow)] == [p.phoneme for p in phonemes_of(fast)]


def _median_f0(chunks: list[TTSChunk]) -> float:
    """Median fundamental frequency of the voiced 40 ms frames, by autocorrelation."""
    pcm = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2").astype(np.float64)
    n = int(0.04 * 22050)
    frames = pcm[: pcm.size // n * n].reshape(-1, n)
    energy = np.sqrt((frames**2).mean(axis=1))
    f0s = []
    lo, hi = int(22050 / 400), int(22050 / 60)  # 60-400 Hz
    for f in frames[energy > 0.3 * energy.max()]:
        f = f - f.mean()
        ac = np.correlate(f, f, mode="full")[n - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        f0s.append(22050 / lag)
    return float(np.median(f0s))


def test_pitch_changes_the_fundamental_frequency(source: EspeakSource) -> None:
    low = run(collect(source.synthesize(ENGLISH, voice="en-us", options={"pitch": 10})))
    high = run(collect(source.synthesize(ENGLISH, voice="en-us", options={"pitch": 90})))
    assert _median_f0(high) > 1.3 * _median_f0(low)


def test_volume_scales_the_amplitude(source: EspeakSource) -> None:
    loud = run(collect(source.synthesize("Hallo", voice="de", options={"volume": 100})))
    soft = run(collect(source.synthesize("Hallo", voice="de", options={"volume": 30})))

    def peak(chunks: list[TTSChunk]) -> int:
        return int(np.abs(np.frombuffer(b"".join(c.audio for c in chunks), "<i2")).max())

    assert peak(soft) < 0.6 * peak(loud)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 20}, "rate=20 is out of range; use 80 to 450"),
        ({"pitch": 101}, "pitch=101 is out of range; use 0 to 100"),
        ({"pitch": "high"}, "must be a number"),
        ({"speed": 1.2}, "unknown espeak option 'speed'; known options: pitch, range, rate"),
        ({"rate": float("nan")}, "must be a number"),
    ],
)
def test_bad_options_fail_at_the_call_with_a_clear_message(
    source: EspeakSource, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        source.synthesize("Hallo", voice="de", options=options)


def test_empty_text_is_refused(source: EspeakSource) -> None:
    with pytest.raises(InputError, match="empty"):
        source.synthesize("   ", voice="de")


class _CountBuffers:
    """Counts the synth-callback buffers the worker thread turns into chunks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = espeak_plugin._Timeline.buffer

        def counting(timeline: object, audio: bytes, events: object) -> object:
            self.count += 1
            return original(timeline, audio, events)  # type: ignore[arg-type]

        monkeypatch.setattr(espeak_plugin._Timeline, "buffer", counting)


def _lock_free_within(seconds: float) -> bool:
    got = _espeak.LOCK.acquire(timeout=seconds)
    if got:
        _espeak.LOCK.release()
    return got


def test_closing_the_generator_stops_synthesis_at_once(
    source: EspeakSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _CountBuffers(monkeypatch)
    full = run(collect(source.synthesize(LONG_DE, voice="de")))
    full_buffers = counter.count
    assert full_buffers >= len(full) > 200  # (a piece's last callback may carry no audio)
    counter.count = 0

    async def body() -> tuple[int, int]:
        agen = source.synthesize(LONG_DE, voice="de")
        got = [await agen.__anext__() for _ in range(3)]
        await agen.aclose()  # type: ignore[attr-defined]
        at_close = counter.count
        await asyncio.sleep(0.3)  # a runaway worker would go on synthesizing here
        with pytest.raises(StopAsyncIteration):
            await agen.__anext__()
        return len(got), counter.count - at_close

    n, after = run(body())
    assert n == 3
    assert after <= 1  # at most the buffer in flight when the flag was set
    assert counter.count < full_buffers // 2
    assert _lock_free_within(0.5)
    # The library is usable right after an abort.
    check_chunks(run(collect(source.synthesize("Noch einmal.", voice="de"))))


def test_cancelling_the_consuming_task_stops_synthesis(
    source: EspeakSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _CountBuffers(monkeypatch)

    async def body() -> tuple[int, int]:
        received: list[TTSChunk] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for chunk in source.synthesize(LONG_DE, voice="de"):
                received.append(chunk)
                first.set()
                await asyncio.sleep(0.01)  # a consumer paced like a real transport

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(received)
        at_cancel = counter.count
        await asyncio.sleep(0.3)
        assert len(received) == n  # nothing more after the cancel
        return n, counter.count - at_cancel

    n, after = run(body())
    assert n >= 1
    assert after <= 1
    assert _lock_free_within(0.5)


def test_event_loop_keeps_running_while_the_library_is_busy(source: EspeakSource) -> None:
    # Another thread holds the process-wide espeak lock (as a concurrent synthesis would) for
    # 0.4 s: a source that blocked the loop while waiting would freeze every other task.
    async def body() -> tuple[float, int, int]:
        release = threading.Event()

        def hold() -> None:
            with _espeak.LOCK:
                release.wait(0.4)

        holder = threading.Thread(target=hold)
        holder.start()
        await asyncio.sleep(0.02)
        ticks: list[float] = []
        stop = False

        async def ticker() -> None:
            while not stop:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        chunks = await collect(source.synthesize(LONG_DE, voice="de", options={"rate": 80}))
        waited = time.perf_counter() - t0
        stop = True
        await tick_task
        holder.join()
        gaps = np.diff(ticks)
        return float(gaps.max()), len(ticks), int(waited * 1000) and len(chunks)

    max_gap, n_ticks, n_chunks = run(body())
    assert n_chunks > 100
    assert n_ticks > 40  # the ticker ran all along: ≥ 0.4 s at 5 ms
    # A loop blocked by the lock wait would stall ≥ 0.38 s; 0.25 s leaves room for a loaded CI.
    assert max_gap < 0.25, f"event loop blocked for {max_gap * 1000:.0f} ms"


def test_text_deltas_are_spoken_piece_by_piece_on_one_timeline(source: EspeakSource) -> None:
    tokens = [
        "Hal",
        "lo",
        ", wie",
        " geht",
        " es",
        " dir",
        "?",
        " Mir",
        " geht",
        " es",
        " gut",
        ".",
    ]

    async def body() -> tuple[list[TTSChunk], float]:
        gate = asyncio.Event()
        first_audio: list[float] = []

        async def llm() -> AsyncIterator[str]:
            for i, t in enumerate(tokens):
                if i == 7:
                    # The second sentence only comes after the first one has been heard: a
                    # source that waited for the whole text would deadlock here.
                    await asyncio.wait_for(gate.wait(), timeout=10)
                yield t

        chunks: list[TTSChunk] = []
        t0 = time.perf_counter()
        async for c in source.synthesize(llm(), voice="de"):
            if not first_audio:
                first_audio.append(time.perf_counter() - t0)
            chunks.append(c)
            gate.set()
        return chunks, first_audio[0]

    chunks, _ = run(body())
    check_chunks(chunks)
    # Both sentences, on one timeline, word indices running on across the pieces.
    whole = run(collect(source.synthesize("Hallo, wie geht es dir? Mir geht es gut.", voice="de")))
    assert [p.phoneme for p in phonemes_of(chunks)] == [p.phoneme for p in phonemes_of(whole)]
    assert [p.word for p in phonemes_of(chunks)] == [p.word for p in phonemes_of(whole)]
    assert audio_ms(chunks) == pytest.approx(audio_ms(whole), abs=300)


def test_deltas_without_a_boundary_are_flushed_at_the_end(source: EspeakSource) -> None:
    chunks = run(collect(source.synthesize(deltas("Guten", " Mor", "gen"), voice="de")))
    check_chunks(chunks)
    assert phonemes_of(chunks)[-1].word == 1


def test_text_segmenter_cuts_at_sentence_and_long_clause_ends_only() -> None:
    seg = TextSegmenter(clause_chars=30)
    assert seg.feed("Es kostet 3.5 Euro") == []  # no cut inside a number
    assert seg.feed(". Und") == ["Es kostet 3.5 Euro."]
    assert seg.feed(" dann, kurz") == []  # a clause end before 30 characters is kept
    assert seg.feed(" danach kam noch viel mehr Text, und") == [
        "Und dann, kurz danach kam noch viel mehr Text,"
    ]
    assert seg.flush() == "und"
    assert seg.flush() is None
    long = TextSegmenter(max_chars=20)
    pieces = long.feed("eins zwei drei vier fünf sechs sieben")
    assert pieces and all(len(p) <= 20 for p in pieces)


def test_bad_delta_types_are_an_input_error(source: EspeakSource) -> None:
    async def bad() -> AsyncIterator[str]:
        yield "Hallo"
        yield 42  # type: ignore[misc]

    with pytest.raises(InputError, match="deltas must be strings"):
        run(collect(source.synthesize(bad(), voice="de")))


# ------------------------------------------------------------------ abandoned utterances

# The first piece the segmenter cuts ("… springen,") holds a clause end of its own: espeak reads
# past it before it speaks, so an abort inside that piece leaves read-ahead text in the library.
CLAUSES_DE = (
    "Der schnelle braune Fuchs, der Zwerg und die Katze springen, laufen und tanzen über "
    "den faulen Hund. Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich."
)


async def _aclose_after(source: EspeakSource, chunks: int) -> None:
    agen = source.synthesize(CLAUSES_DE, voice="de")
    for _ in range(chunks):
        await agen.__anext__()
    await agen.aclose()  # type: ignore[attr-defined]


async def _cancel_consumer(source: EspeakSource, chunks: int) -> None:
    got = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in source.synthesize(CLAUSES_DE, voice="de"):
            n += 1
            if n >= chunks:
                got.set()
                await asyncio.sleep(30)  # a consumer stuck in its transport

    task = asyncio.create_task(consume())
    await got.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _left_suspended(source: EspeakSource, chunks: int) -> object:
    agen = source.synthesize(CLAUSES_DE, voice="de")
    for _ in range(chunks):
        await agen.__anext__()
    return agen  # still suspended when asyncio.run closes the loop (shutdown_asyncgens)


async def _garbage_collected(source: EspeakSource, chunks: int) -> None:
    agen = source.synthesize(CLAUSES_DE, voice="de")
    for _ in range(chunks):
        await agen.__anext__()
    del agen  # dropped without aclose while the loop runs on
    gc.collect()
    await asyncio.sleep(0.1)


def _loop_closed_without_shutdown(source: EspeakSource, chunks: int) -> None:
    # A host that closes its loop without shutdown_asyncgens: the generator's cleanup never
    # runs on that loop; the worker thread must still stop and free the library.
    loop = asyncio.new_event_loop()
    agen = source.synthesize(CLAUSES_DE, voice="de")
    try:
        for _ in range(chunks):
            loop.run_until_complete(agen.__anext__())
    finally:
        loop.close()
    del agen
    gc.collect()


@pytest.mark.parametrize("chunks", [1, 12])
@pytest.mark.parametrize(
    "abandon", ["aclose", "cancel consumer", "loop ends", "garbage collected", "loop closed"]
)
def test_an_abandoned_utterance_leaves_nothing_for_the_next(
    source: EspeakSource, abandon: str, chunks: int
) -> None:
    if abandon == "aclose":
        run(_aclose_after(source, chunks))
    elif abandon == "cancel consumer":
        run(_cancel_consumer(source, chunks))
    elif abandon == "loop ends":
        run(_left_suspended(source, chunks))
    elif abandon == "garbage collected":
        run(_garbage_collected(source, chunks))
    else:
        _loop_closed_without_shutdown(source, chunks)
    # The abandoned synthesis stops and frees the library at once …
    assert _lock_free_within(1.0)
    # … and the next utterance, translated (the character path's G2P, uncached) or spoken,
    # sees only its own text: no read-ahead text, phoneme or audio of the one before.
    assert g2p_word.__wrapped__("Hallo", "de") == ("h", "ˈa", "l", "oː")
    chunks_after = run(collect(source.synthesize("Hallo.", voice="de")))
    check_chunks(chunks_after)
    assert [p.phoneme for p in phonemes_of(chunks_after)] == ["h", "ˈa", "l", "oː"]
    assert audio_ms(chunks_after) < 1000


def test_phonemes_carry_the_index_of_their_word_in_the_text(source: EspeakSource) -> None:
    """espeak joins words ("on the" is one word to it, no event for "the") and splits others
    ("3.5"); a phoneme's ``word`` is still the index of the text's own word it belongs to, over
    every piece of a multi-sentence text: word timings built on it stay on the right sound."""
    text = "Maybe the people on the boat bring more apples. It costs 3.5 dollars, we left."
    words = text.split()
    got = phonemes_of(run(collect(source.synthesize(text, voice="en-us"))))
    first = {}
    for p in got:
        first.setdefault(p.word, p.phoneme)
    indices = [p.word for p in got]
    assert indices == sorted(indices)
    assert first[words.index("boat")] == "b" and first[words.index("bring")] == "b"
    assert first[words.index("apples.")] == "ˈæ"
    assert first[words.index("dollars,")] == "d" and first[words.index("left.")] == "l"
    assert words.index("the", 2) not in first  # spoken as part of "on"
    assert max(indices) == len(words) - 1
