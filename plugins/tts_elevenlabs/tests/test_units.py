"""Pure parts: alignment → absolute timeline, settings and URLs, text feeding, redaction."""

from __future__ import annotations

import pytest
from lipcore_tts_elevenlabs import (
    EU_BASE_URL,
    CharTimeline,
    ElevenLabsConfigError,
    ElevenLabsSettings,
    ElevenLabsTTSSource,
    VoiceSettings,
)
from lipcore_tts_elevenlabs.errors import redact
from lipcore_tts_elevenlabs.settings import UnknownOptionError, ws_base_url
from lipcore_tts_elevenlabs.text import TextFeeder

from lipcore.errors import InputError

# The vendor's documented example frame (protocol reference §1.3).
FRAME = {
    "audio": "AAAA",
    "isFinal": None,
    "normalizedAlignment": {
        "chars": [" ", "H", "a", "l", "l", "o"],
        "charStartTimesMs": [0, 46, 81, 139, 186, 209],
        "charDurationsMs": [46, 35, 58, 47, 23, 58],
    },
    "alignment": {
        "chars": ["H", "a", "l", "l", "o"],
        "charStartTimesMs": [0, 35, 93, 140, 163],
        "charDurationsMs": [35, 58, 47, 23, 58],
    },
}


def test_ws_frame_is_placed_at_its_audio_offset_and_prefers_normalized() -> None:
    tl = CharTimeline()
    chars = tl.ws_frame(FRAME, 1000.0)
    # leading space of the utterance dropped; times = chunk offset + relative start
    assert "".join(c.char for c in chars) == "Hallo"
    assert chars[0].start_ms == 1046.0 and chars[0].end_ms == 1081.0
    assert chars[-1].start_ms == 1209.0 and chars[-1].end_ms == 1267.0


def test_original_alignment_can_drive_instead() -> None:
    chars = CharTimeline(prefer="original").ws_frame(FRAME, 0.0)
    assert chars[0].start_ms == 0.0 and chars[1].start_ms == 35.0


def test_spec_spelling_chars_durations_is_read() -> None:
    frame = {
        "normalizedAlignment": {
            "chars": ["a", "b"],
            "charStartTimesMs": [0, 10],
            "charsDurationsMs": [10, 20],
        }
    }
    chars = CharTimeline().ws_frame(frame, 500.0)
    assert [(c.start_ms, c.end_ms) for c in chars] == [(500.0, 510.0), (510.0, 530.0)]


def test_null_alignments_fall_back_then_give_nothing() -> None:
    tl = CharTimeline()
    only_original = {"normalizedAlignment": None, "alignment": FRAME["alignment"]}
    assert "".join(c.char for c in tl.ws_frame(only_original, 0.0)) == "Hallo"
    assert tl.ws_frame({"normalizedAlignment": None, "alignment": None}, 100.0) == ()
    assert tl.frames_without_timings == 1


def test_leading_space_is_stripped_only_at_the_utterance_start() -> None:
    tl = CharTimeline()
    first = tl.ws_frame(FRAME, 0.0)
    second = tl.ws_frame(FRAME, 300.0)  # a later frame that starts with a space: a word gap
    assert first[0].char == "H"
    assert second[0].char == " " and second[0].start_ms == 300.0


def test_http_seconds_are_continuous_and_offset_per_request() -> None:
    line = {
        "alignment": {
            "characters": ["H", "i"],
            "character_start_times_seconds": [1.0, 1.07],
            "character_end_times_seconds": [1.07, 1.2],
        },
        "normalized_alignment": None,
    }
    chars = CharTimeline().http_line(line, 250.0)
    assert [(c.char, c.start_ms, c.end_ms) for c in chars] == [
        ("H", 1250.0, 1320.0),
        ("i", 1320.0, pytest.approx(1450.0)),
    ]


def test_mismatched_arrays_are_truncated_not_fatal() -> None:
    frame = {
        "alignment": {
            "chars": ["a", "b", "c"],
            "charStartTimesMs": [0, 5],
            "charDurationsMs": [5, 5, 5],
        }
    }
    assert len(CharTimeline().ws_frame(frame, 0.0)) == 2


def test_base_url_env_and_ws_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_BASE_URL", EU_BASE_URL)
    s = ElevenLabsSettings()
    assert s.base_url == "https://api.eu.residency.elevenlabs.io"
    assert ws_base_url(s.base_url) == "wss://api.eu.residency.elevenlabs.io"
    assert ws_base_url("http://127.0.0.1:9/proxy/eleven/") == "ws://127.0.0.1:9/proxy/eleven"
    assert (
        ElevenLabsSettings(base_url="https://proxy.example/x/").base_url
        == "https://proxy.example/x"
    )


def test_server_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # `lipcore serve --tts elevenlabs` builds the source without arguments: the environment
    # configures it; explicit settings still win; a bad value is a clear config error.
    for name in ("MODEL_ID", "OUTPUT_FORMAT", "LANGUAGE_CODE", "TRANSPORT"):
        monkeypatch.delenv(f"ELEVENLABS_{name}", raising=False)
    s = ElevenLabsSettings()
    assert (s.model_id, s.output_format, s.language_code, s.transport) == (
        "eleven_flash_v2_5",
        "pcm_22050",
        None,
        "multi",
    )
    monkeypatch.setenv("ELEVENLABS_MODEL_ID", "eleven_turbo_v2_5")
    monkeypatch.setenv("ELEVENLABS_OUTPUT_FORMAT", "pcm_16000")
    monkeypatch.setenv("ELEVENLABS_LANGUAGE_CODE", "de")
    monkeypatch.setenv("ELEVENLABS_TRANSPORT", "http")
    source = ElevenLabsTTSSource()
    s = source.settings
    assert (s.model_id, s.output_format, s.language_code, s.transport) == (
        "eleven_turbo_v2_5",
        "pcm_16000",
        "de",
        "http",
    )
    # the server announces capabilities.sample_rates[0] to its clients: the configured rate
    assert source.capabilities.sample_rates[0] == 16000
    assert ElevenLabsTTSSource.capabilities.sample_rates[0] == 22050  # the class is untouched
    assert ElevenLabsTTSSource(output_format="pcm_24000").capabilities.sample_rates[0] == 24000
    assert ElevenLabsTTSSource(model_id="eleven_flash_v2").settings.model_id == "eleven_flash_v2"
    monkeypatch.setenv("ELEVENLABS_OUTPUT_FORMAT", "mp3_44100_128")
    with pytest.raises(ElevenLabsConfigError, match="output_format"):
        ElevenLabsTTSSource()


def test_voice_profiles_from_settings_or_json_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ELEVENLABS_VOICE_PROFILES",
        '{"anna": {"voice_id": "v1", "language_code": "de", "voice_settings": {"speed": 1.1}}}',
    )
    ((name, profile),) = ElevenLabsSettings().profiles.items()
    assert name == "anna" and profile.voice_id == "v1"
    assert profile.options() == {
        "voice_settings": VoiceSettings(speed=1.1).model_dump(),
        "language_code": "de",
    }
    monkeypatch.setenv("ELEVENLABS_VOICE_PROFILES", "{not json")
    with pytest.raises(ElevenLabsConfigError, match="JSON"):
        ElevenLabsTTSSource()
    monkeypatch.delenv("ELEVENLABS_VOICE_PROFILES")
    with pytest.raises(ElevenLabsConfigError, match="voice_id"):
        ElevenLabsTTSSource(profiles={"x": {"model_id": "eleven_flash_v2_5"}})


def test_bad_settings_say_what_is_wrong() -> None:
    with pytest.raises(ElevenLabsConfigError, match="base_url"):
        ElevenLabsTTSSource(base_url="ftp://nope")
    with pytest.raises(ElevenLabsConfigError, match="output_format"):
        ElevenLabsTTSSource(output_format="mp3_44100_128")
    with pytest.raises(ElevenLabsConfigError, match="chunk_length_schedule"):
        ElevenLabsTTSSource(chunk_length_schedule=[10])


def test_api_key_from_env_or_setting_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(ElevenLabsConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsSettings().resolved_api_key()
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_env_secret_1234")
    assert ElevenLabsSettings().resolved_api_key() == "sk_env_secret_1234"
    src = ElevenLabsTTSSource(api_key="sk_setting_secret_99")
    assert src.settings.resolved_api_key() == "sk_setting_secret_99"
    for text in (
        repr(src),
        str(src),
        repr(src.settings),
        str(src.settings),
        src.settings.model_dump_json(),
    ):
        assert "sk_setting_secret_99" not in text


def test_options_merge_per_utterance_and_reject_unknown() -> None:
    s = ElevenLabsSettings(api_key="k")
    m = s.merged(
        {
            "voice_settings": {"stability": 0.3, "speed": 1.1},
            "language": "de",
            "model": "eleven_turbo_v2_5",
            "session_id": "abc",
        }
    )
    assert m.voice_settings is not None and m.voice_settings.stability == 0.3
    assert m.language_code == "de" and m.model_id == "eleven_turbo_v2_5"
    assert m.resolved_api_key() == "k"
    with pytest.raises(UnknownOptionError, match="stabilty"):
        s.merged({"stabilty": 0.3})
    with pytest.raises(InputError, match="speed"):
        s.merged({"voice_settings": {"speed": 3.0}})


def test_query_parameters() -> None:
    s = ElevenLabsSettings(language_code="de", output_format="pcm_16000")
    q = s.query(websocket=True)
    assert q["model_id"] == "eleven_flash_v2_5" and q["sync_alignment"] == "true"
    assert q["output_format"] == "pcm_16000" and q["language_code"] == "de"
    assert s.sample_rate == 16000


def test_text_feeder_holds_words_and_flushes_sentences() -> None:
    f = TextFeeder()
    assert f.feed("Hal") == []
    assert f.feed("lo Wel") == [("Hallo ", False)]
    assert f.feed("t. Wie") == [("Welt. ", True)]
    assert f.feed(" geht's") == [("Wie ", False)]
    assert f.end() == [("geht's ", True)]
    g = TextFeeder(flush_on_sentence_end=False)
    assert g.feed("Ja. Nein ") == [("Ja. Nein ", False)]
    assert g.end() == [("", True)]


def test_redact_masks_keys_and_key_like_fields() -> None:
    text = 'header xi-api-key: sk_abcdef123 and {"xi_api_key": "other"} url?api_key=zzz9'
    out = redact(text, "sk_abcdef123")
    assert "sk_abcdef123" not in out and "other" not in out and "zzz9" not in out
