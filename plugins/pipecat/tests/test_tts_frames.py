"""Frame-level tests of LipcoreTTSService with Pipecat's own test utility (``run_test``: the
service alone in a real pipeline, frames in, frames out): order, word timestamps, one timeline
per turn, interruption (nothing after it), storms, unknown frames, sample rates, bad text.

The deterministic speech of ``lipcore.testing.ReplayTTSSource`` (one phoneme per letter, 70 ms
each, 60 ms between words, 16 kHz) makes exact times checkable; one test speaks with the real
offline espeak-ng."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from lipcore_pipecat import (
    LipcoreTimingsFrame,
    LipcoreTTSService,
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)
from pipecat.frames.frames import (
    DataFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from lipcore.testing import ReplayTTSSource, testing_engine

LIPCORE = (LipcoreUtteranceStartFrame, LipcoreVisemesFrame, LipcoreUtteranceEndFrame)


def service(*, realtime: bool = False, **kwargs: Any) -> LipcoreTTSService:
    engine = testing_engine(tts={"replay": ReplayTTSSource(realtime=realtime)},
                            load_entrypoints=False)
    return LipcoreTTSService(engine=engine, voice="test", **kwargs)


def run(tts: LipcoreTTSService, frames: list[Frame],
        **kwargs: Any) -> tuple[list[Frame], list[Frame]]:
    down, up = asyncio.run(run_test(tts, frames_to_send=frames, **kwargs))
    return list(down), list(up)


def audio_ms(frames: list[Frame]) -> float:
    return sum(len(f.audio) / 2 / f.sample_rate * 1000.0 for f in frames
               if isinstance(f, TTSAudioRawFrame))


def test_frame_order_of_one_utterance() -> None:
    down, up = run(service(), [TTSSpeakFrame("hello big world")])
    kinds = [type(f) for f in down]
    assert TTSStartedFrame in kinds and TTSStoppedFrame in kinds
    i_started, i_start = kinds.index(TTSStartedFrame), kinds.index(LipcoreUtteranceStartFrame)
    i_stopped, i_end = kinds.index(TTSStoppedFrame), kinds.index(LipcoreUtteranceEndFrame)
    audio_at = [i for i, k in enumerate(kinds) if k is TTSAudioRawFrame]
    # started → utterance start → (visemes, audio)* → stopped → utterance end, once each.
    assert i_started < i_start < audio_at[0] and audio_at[-1] < i_stopped < i_end
    assert kinds.count(LipcoreUtteranceStartFrame) == kinds.count(LipcoreUtteranceEndFrame) == 1
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    # Every lipcore frame names the audio context its audio has.
    contexts = {f.context_id for f in down if isinstance(f, (*LIPCORE, TTSAudioRawFrame))}
    assert len(contexts) == 1 and None not in contexts
    # The audio is all of the speech: 13 letters x 70 ms + 3 pauses x 60 ms.
    assert audio_ms(down) == pytest.approx(13 * 70 + 3 * 60, abs=1.0)
    end = next(f for f in down if isinstance(f, LipcoreUtteranceEndFrame))
    assert end.duration_ms == pytest.approx(audio_ms(down), abs=0.2)
    # Final viseme frames: strictly increasing, ending at Rest (the mouth closes over up to
    # ~250 ms after the last sound, as lipcore's engine always does).
    finals = [v for f in down if isinstance(f, LipcoreVisemesFrame) and not f.provisional
              for v in f.frames]
    pts = [v.pts_ms for v in finals]
    assert pts == sorted(pts) and len(set(pts)) == len(pts) and len(pts) > 20
    assert pts[0] >= 0 and pts[-1] <= audio_ms(down) + 300
    assert finals[-1].weights == {} or sum(finals[-1].weights.values()) < 0.05
    assert any(sum(v.weights.values()) > 0.5 for v in finals)  # the mouth opens
    # Each viseme event comes before the audio of its span has all been pushed: a frame is
    # never later than the audio pushed after its event ends.
    pushed = 0.0
    for f in down:
        if isinstance(f, TTSAudioRawFrame):
            pushed += len(f.audio) / 2 / f.sample_rate * 1000.0
        elif isinstance(f, LipcoreVisemesFrame) and not f.provisional:
            assert f.frames[0].pts_ms <= pushed + 300, (f.frames[0].pts_ms, pushed)


def test_word_timestamps_follow_the_source() -> None:
    down, _ = run(service(), [TTSSpeakFrame("hello big world")])
    words = [f for f in down if isinstance(f, TTSTextFrame)]
    assert [w.text for w in words] == ["hello", "big", "world"]
    # Pipecat stamps word frames with pts (ns) = first audio + the word's start. The source's
    # starts: 0, 5x70+60 = 410, 410 + 3x70+60 = 680 ms.
    t = [w.pts / 1e6 for w in words]
    assert t[1] - t[0] == pytest.approx(410, abs=1) and t[2] - t[0] == pytest.approx(680, abs=1)


def test_a_turn_of_several_sentences_is_one_timeline() -> None:
    frames: list[Frame] = [LLMFullResponseStartFrame(), LLMTextFrame("Hello there. "),
                           LLMTextFrame("How are you today?"), LLMFullResponseEndFrame()]
    down, _ = run(service(), frames)
    assert sum(isinstance(f, LipcoreUtteranceStartFrame) for f in down) == 1
    assert sum(isinstance(f, LipcoreUtteranceEndFrame) for f in down) == 1
    finals = [v.pts_ms for f in down if isinstance(f, LipcoreVisemesFrame) and not f.provisional
              for v in f.frames]
    assert finals == sorted(finals) and len(set(finals)) == len(finals)
    first = (10 * 70 + 2 * 60)  # "hello there": the second sentence starts after it
    assert max(finals) > first + 500
    words = [f for f in down if isinstance(f, TTSTextFrame)]
    assert [w.text for w in words][:3] == ["Hello", "there.", "How"]
    assert (words[2].pts - words[0].pts) / 1e6 == pytest.approx(first, abs=1)
    end = next(f for f in down if isinstance(f, LipcoreUtteranceEndFrame))
    assert end.duration_ms == pytest.approx(audio_ms(down), abs=0.5)


def test_an_interruption_drops_the_rest_of_the_utterance() -> None:
    # Real-time speech (a 3.4 s sentence); interrupted after ~0.6 s.
    tts = service(realtime=True)
    text = "one two three four five six seven eight nine ten eleven twelve"
    down, _ = run(tts, [TTSSpeakFrame(text), SleepFrame(0.6), InterruptionFrame(),
                        SleepFrame(0.6)])
    i = next(k for k, f in enumerate(down) if isinstance(f, InterruptionFrame))
    after = down[i + 1:]
    assert audio_ms(down[:i]) > 300  # it was speaking
    # Nothing of the interrupted utterance follows the interruption: no audio, no visemes,
    # no end (a client gets `stop` for it instead), no words.
    assert not [f for f in after if isinstance(f, (TTSAudioRawFrame, TTSTextFrame, *LIPCORE))]
    assert audio_ms(down) < 2000
    assert not any(isinstance(f, LipcoreUtteranceEndFrame) for f in down)


def test_an_interruption_storm_then_speech() -> None:
    tts = service(realtime=True)
    storm: list[Frame] = [InterruptionFrame() for _ in range(50)]
    down, up = run(tts, [TTSSpeakFrame("first words here"), SleepFrame(0.2), *storm,
                         SleepFrame(0.1), *storm, TTSSpeakFrame("then this"), SleepFrame(1.2)])
    last_int = max(k for k, f in enumerate(down) if isinstance(f, InterruptionFrame))
    after = down[last_int + 1:]
    # The service is alive after 100 interruptions: the next text is spoken whole.
    assert [type(f) for f in after if isinstance(f, (LipcoreUtteranceStartFrame,
                                                     LipcoreUtteranceEndFrame))] == \
        [LipcoreUtteranceStartFrame, LipcoreUtteranceEndFrame]
    assert audio_ms(after) == pytest.approx(8 * 70 + 2 * 60, abs=1)
    assert sum(isinstance(f, InterruptionFrame) for f in down) == 100
    assert not [f for f in up if isinstance(f, ErrorFrame)]


@dataclass
class _AppData(DataFrame):
    payload: str = ""


@dataclass
class _AppSystem(SystemFrame):
    payload: str = ""


def test_unknown_frames_pass_through_untouched() -> None:
    data, system = _AppData(payload="x"), _AppSystem(payload="y")
    down, _ = run(service(), [TTSSpeakFrame("hi you"), data, system])
    assert data in down and system in down
    got = next(f for f in down if f is data)
    assert got.payload == "x" and type(got) is _AppData
    # A data frame queued behind speech stays behind it (Pipecat's order for TTS services).
    assert down.index(data) > max(k for k, f in enumerate(down)
                                  if isinstance(f, TTSAudioRawFrame))


@pytest.mark.parametrize(("tts_rate", "pipeline_rate"), [(None, 24000), (None, 8000),
                                                         (44100, 24000), (16000, 48000)])
def test_audio_at_the_services_rate_and_the_timeline_kept(tts_rate: int | None,
                                                          pipeline_rate: int) -> None:
    """The source speaks at 16 kHz; the service resamples to its own rate (the pipeline's by
    default), and the audio keeps its length, so visemes and words stay on the audio."""
    tts = service(sample_rate=tts_rate)
    down, _ = run(tts, [TTSSpeakFrame("hello big world")],
                  pipeline_params=PipelineParams(audio_out_sample_rate=pipeline_rate))
    rate = tts_rate or pipeline_rate
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert {f.sample_rate for f in audio} == {rate}
    assert audio_ms(down) == pytest.approx(13 * 70 + 3 * 60, abs=1.0)
    start = next(f for f in down if isinstance(f, LipcoreUtteranceStartFrame))
    assert start.sample_rate == rate


def test_text_with_nothing_to_say_and_an_unknown_voice() -> None:
    down, up = run(service(), [TTSSpeakFrame("!!! ...")])
    assert not [f for f in down if isinstance(f, (TTSAudioRawFrame, LipcoreUtteranceStartFrame))]
    assert not [f for f in up if isinstance(f, ErrorFrame)]  # silence is no failure
    engine = testing_engine(tts={"replay": ReplayTTSSource()}, load_entrypoints=False)
    down, up = run(LipcoreTTSService(engine=engine, voice="klingon"), [TTSSpeakFrame("hi")])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors and "klingon" in errors[0].error
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame)]


def test_real_espeak_speech() -> None:
    """The offline engine itself (espeak-ng at 22 050 Hz) into a 24 kHz pipeline."""
    tts = LipcoreTTSService(voice="en-us")
    down, up = run(tts, [TTSSpeakFrame("Hello world. How are you today?")])
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio and {f.sample_rate for f in audio} == {24000}
    total = audio_ms(down)
    assert 1200 < total < 4000
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert words == ["Hello", "world.", "How", "are", "you", "today?"]
    finals = [v for f in down if isinstance(f, LipcoreVisemesFrame) and not f.provisional
              for v in f.frames]
    # 30 fps over the whole utterance, the lead included.
    assert len(finals) > 0.9 * total / 1000 * 30
    assert finals[-1].pts_ms <= total + 300
    end = next(f for f in down if isinstance(f, LipcoreUtteranceEndFrame))
    assert end.duration_ms == pytest.approx(total, abs=0.5)


def test_words_espeak_joins_are_each_timed() -> None:
    """espeak speaks "on the" as one word (no word event for "the"): every word of the text
    still reaches Pipecat, in order, each at the start of its own sound: "boat" at its /b/,
    not one word late (which would put every later word, and the mouth drawn from word
    timings, on the wrong sound, and drop the last word from the transcript)."""
    from lipcore.engine import Engine

    text = "Maybe the people on the boat bring more apples."
    engine = Engine()
    tts = LipcoreTTSService(engine=engine, voice="en-us", emit_timings=True)
    down, _ = run(tts, [TTSSpeakFrame(text)])
    words = [f for f in down if isinstance(f, TTSTextFrame)]
    assert [w.text for w in words] == text.split()
    t0 = words[0].pts
    starts = {w.text: (w.pts - t0) / 1e6 for w in words[4:]}  # the second "the" on
    phonemes = [p for f in down if isinstance(f, LipcoreTimingsFrame) for p in f.phonemes]
    bs = [p.start_ms for p in phonemes if p.phoneme == "b"]
    ths = [p.start_ms for p in phonemes if p.phoneme == "ð"]
    # (the frames' times count from the first audio, Pipecat's pts from the same moment)
    assert starts["boat"] == pytest.approx(bs[1], abs=1)
    assert starts["bring"] == pytest.approx(bs[2], abs=1)
    assert starts["the"] == pytest.approx(ths[1], abs=1)  # "the" of "on the": at its /ð/
    ordered = [(w.pts - t0) / 1e6 for w in words]
    assert ordered == sorted(ordered)
