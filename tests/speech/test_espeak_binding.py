"""The ctypes binding itself: struct layouts against the C ABI, voices, G2P, events."""

from __future__ import annotations

import ctypes

import pytest

from lipcore.speech import _espeak


def test_struct_layouts_match_speak_lib_h() -> None:
    # espeak_EVENT (speak_lib.h, API revision 12) on LP64: six 4-byte fields, a pointer, and a
    # union of an int, a pointer and char[8] → 8 bytes; 40 in all.
    ev = _espeak._Event
    assert ctypes.sizeof(ctypes.c_void_p) == 8
    assert ev.type.offset == 0
    assert ev.audio_position.offset == 16
    assert ev.user_data.offset == 24
    assert ev.id.offset == 32
    assert ctypes.sizeof(_espeak._EventId) == 8
    assert ctypes.sizeof(ev) == 40
    # espeak_VOICE: three pointers, four bytes, an int, a pointer.
    assert _espeak._Voice.gender.offset == 24
    assert _espeak._Voice.score.offset == 28
    assert ctypes.sizeof(_espeak._Voice) == 40


def test_library_loads_from_the_wheel_and_reports_its_version() -> None:
    lib = _espeak.get_library()
    assert lib is _espeak.get_library()  # one per process
    assert lib.sample_rate == _espeak.SAMPLE_RATE == 22050
    assert lib.version.startswith("1.5")


def test_list_voices_parses_the_language_lists() -> None:
    voices = {v.identifier: v for v in _espeak.get_library().list_voices()}
    assert voices["gmw/de"].language == "de"
    assert voices["gmw/en-US"].language == "en-us"
    # The British voice lists two languages with priorities: the parser walks the byte list.
    assert (2, "en-gb") in voices["gmw/en"].languages
    assert (2, "en") in voices["gmw/en"].languages


def test_set_voice_accepts_names_and_language_codes_and_rejects_others() -> None:
    lib = _espeak.get_library()
    lib.set_voice("de")
    lib.set_voice("en-gb")  # a language code, not a voice file name
    with pytest.raises(_espeak.EspeakError, match="no voice 'zz-nonsense'"):
        lib.set_voice("zz-nonsense")


def test_text_to_phonemes_gives_ipa_per_clause_with_separated_phonemes() -> None:
    lib = _espeak.get_library()
    clauses = lib.text_to_phonemes("Hallo, Pfeffer", "de")
    assert len(clauses) == 2  # the comma ends a clause
    assert clauses[0].split("_") == ["h", "ˈa", "l", "oː"]
    assert clauses[1].split("_")[0] == "pf"  # a multi-letter phoneme stays whole
    en = lib.text_to_phonemes("church", "en-us")[0].split("_")
    assert en[0] == "tʃ" and en[-1] == "tʃ"


def test_synth_delivers_buffers_and_phoneme_events_with_audio_positions() -> None:
    lib = _espeak.get_library()
    buffers: list[int] = []
    events: list[_espeak.EspeakEvent] = []

    def on_audio(audio: bytes, evs: list[_espeak.EspeakEvent]) -> bool:
        buffers.append(len(audio) // 2)
        events.extend(evs)
        return True

    with _espeak.LOCK:
        lib.set_voice("de")
        lib.set_parameters(rate=175, pitch=50, volume=100, pitch_range=50)
        assert lib.synth("Mama", on_audio)
    total_ms = sum(buffers) * 1000 / lib.sample_rate
    phon = [e for e in events if e.type == _espeak.EVENT_PHONEME and e.phoneme]
    assert [e.phoneme for e in phon] == ["m", "ˈɑ", "m", "ɑː"]
    positions = [e.audio_ms for e in phon]
    assert positions == sorted(positions)
    assert positions[0] >= 0 and positions[-1] < total_ms
    assert max(buffers) <= lib.sample_rate * lib.buffer_ms // 1000 + 1
    assert any(e.type == _espeak.EVENT_WORD for e in events)


def test_returning_false_from_the_callback_aborts_synthesis() -> None:
    lib = _espeak.get_library()
    calls = 0

    def on_audio(audio: bytes, evs: list[_espeak.EspeakEvent]) -> bool:
        nonlocal calls
        calls += 1
        return calls < 3

    with _espeak.LOCK:
        lib.set_voice("de")
        completed = lib.synth(
            "Dies ist ein ziemlich langer Satz, der viele Puffer füllt. " * 5, on_audio
        )
    assert completed is False
    assert calls == 3


def _abort_after(lib: _espeak.EspeakLibrary, text: str, voice: str, buffers: int) -> None:
    calls = 0

    def on_audio(audio: bytes, evs: list[_espeak.EspeakEvent]) -> bool:
        nonlocal calls
        calls += 1
        return calls < buffers

    with _espeak.LOCK:
        lib.set_voice(voice)
        lib.set_parameters(rate=175, pitch=50, volume=100, pitch_range=50)
        assert lib.synth(text, on_audio) is False


@pytest.mark.parametrize("buffers", [1, 4, 30])
@pytest.mark.parametrize(
    ("voice", "word", "expected"),
    [("de", "Hallo", "h_ˈa_l_oː"), ("en-us", "Hello", "h_ə_l_ˈoʊ")],
)
def test_g2p_after_an_aborted_synth_reads_only_its_own_text(
    buffers: int, voice: str, word: str, expected: str
) -> None:
    # espeak reads one character past a clause end before it speaks the clause; a synth
    # stopped there left that character ("Z" of "Zwölf", "d" of "der") in the reader, and the
    # next G2P call read it first: "Hallo" came back as "ts ɛt h a l oː" or "d eː h a l oː".
    lib = _espeak.get_library()
    _abort_after(lib, "Der Hund bellt, der Zwerg lacht. Zwölf Boxer jagen Viktor.", "de", buffers)
    assert lib.text_to_phonemes(word, voice) == [expected]
    _abort_after(lib, "Hello there, my friend. Zebras run fast.", "en-us", buffers)
    assert lib.text_to_phonemes(word, voice) == [expected]


def test_g2p_after_a_phoneme_input_synth_reads_brackets_as_text() -> None:
    # A synth with phoneme input left the library's phoneme-input flag set for G2P.
    lib = _espeak.get_library()
    text = "[[h@l'o:]] Hallo"
    plain = lib.text_to_phonemes(text, "de")
    with _espeak.LOCK:
        lib.set_voice("de")
        assert lib.synth("[[h@l'o:]]", lambda audio, evs: True, phoneme_input=True)
    assert lib.text_to_phonemes(text, "de") == plain
    assert plain[-1].strip("_").split(" ")[-1] == "h_ˈa_l_oː"
