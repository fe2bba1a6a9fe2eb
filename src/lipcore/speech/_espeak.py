"""ctypes binding to libespeak-ng as shipped by the ``espeakng-loader`` wheel (no apt).

Only the small part of the C API lipcore needs (``speak_lib.h``, API revision 12, library
1.52): initialise in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with IPA phoneme events, synthesize with
a callback that receives audio buffers plus events, list voices, and translate text to IPA
(grapheme → phoneme).

The library keeps its state (current voice, parameters, callback) in process globals and is not
thread-safe, so every call goes through :data:`LOCK`. Calls here are **blocking**; async code
runs them in a worker thread (see :mod:`lipcore.default_plugins.espeak`).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "LOCK",
    "SAMPLE_RATE",
    "EspeakError",
    "EspeakEvent",
    "EspeakVoiceInfo",
    "get_library",
]

# -- constants from speak_lib.h (API revision 12) --------------------------------------------

AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
INITIALIZE_PHONEME_EVENTS: Final = 0x0001
INITIALIZE_PHONEME_IPA: Final = 0x0002
INITIALIZE_DONT_EXIT: Final = 0x8000

CHARS_UTF8: Final = 1
SSML: Final = 0x10
PHONEME_INPUT: Final = 0x100
ENDPAUSE: Final = 0x1000
POS_CHARACTER: Final = 1

EVENT_LIST_TERMINATED: Final = 0
EVENT_WORD: Final = 1
EVENT_SENTENCE: Final = 2
EVENT_MARK: Final = 3
EVENT_PLAY: Final = 4
EVENT_END: Final = 5
EVENT_MSG_TERMINATED: Final = 6
EVENT_PHONEME: Final = 7
EVENT_SAMPLERATE: Final = 8

PARAM_RATE: Final = 1
PARAM_VOLUME: Final = 2
PARAM_PITCH: Final = 3
PARAM_RANGE: Final = 4

PHONEMES_IPA: Final = 0x02

RATE_MIN: Final = 80
RATE_MAX: Final = 450
RATE_NORMAL: Final = 175

#: espeak-ng's output rate for its own (non-mbrola) voices.
SAMPLE_RATE: Final = 22050

#: One lock for the whole process: the library is a singleton with global state.
LOCK: Final = threading.RLock()


class EspeakError(RuntimeError):
    """The espeak-ng library failed (not found, failed to initialise, refused a call)."""


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme names, UTF-8, NUL-terminated unless 8 bytes long
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE (a C enum: int sized)
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # characters from the start of the text (1-based)
        ("length", ctypes.c_int),  # word length in characters (WORD events)
        ("audio_position", ctypes.c_int),  # ms within the generated speech of this message
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        # (priority byte + NUL-terminated name)*, then NUL: a raw pointer, since c_char_p would
        # stop at the first NUL.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True, slots=True)
class EspeakEvent:
    """A copied espeak event. ``audio_ms`` is relative to the start of its ``synth`` call."""

    type: int
    audio_ms: int
    text_position: int
    length: int
    number: int = 0
    phoneme: str = ""


@dataclass(frozen=True, slots=True)
class EspeakVoiceInfo:
    """A voice as espeak lists it. ``identifier`` is its file below ``voices/`` or ``lang/``."""

    name: str
    identifier: str
    languages: tuple[tuple[int, str], ...]  # (priority, language)
    gender: int

    @property
    def language(self) -> str:
        return self.languages[0][1] if self.languages else ""


#: ``on_audio(samples_s16le, events) -> keep_going``; return False to abort synthesis.
AudioCallback = Callable[[bytes, list[EspeakEvent]], bool]


def _decode(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _parse_languages(raw: int | None) -> tuple[tuple[int, str], ...]:
    """Walk the ``languages`` byte list: priority byte, NUL-terminated name, …, final NUL."""
    if not raw:
        return ()
    out: list[tuple[int, str]] = []
    offset = 0
    while True:
        priority = ctypes.c_ubyte.from_address(raw + offset).value
        if priority == 0:
            break
        name = ctypes.string_at(raw + offset + 1)
        out.append((priority, name.decode("utf-8", "replace")))
        offset += 1 + len(name) + 1
    return tuple(out)


class EspeakLibrary:
    """The loaded, initialised library. Get it with :func:`get_library`; never construct two."""

    def __init__(self, library_path: str, data_path: str, buffer_ms: int = 60) -> None:
        try:
            self._lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise EspeakError(
                f"cannot load libespeak-ng from {library_path}: {exc}. "
                "Reinstall it with: pip install --force-reinstall espeakng-loader"
            ) from exc
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p

        # ``path`` is the directory that *contains* espeak-ng-data … or the data dir itself:
        # espeak-ng accepts both, and the wheel ships the data dir.
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            buffer_ms,
            data_path.encode(),
            INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(
                f"espeak-ng failed to initialise with data at {data_path}. "
                "Reinstall it with: pip install --force-reinstall espeakng-loader"
            )
        self.sample_rate = rate
        self.version = _decode(lib.espeak_Info(None))
        self.buffer_ms = buffer_ms
        self._on_audio: AudioCallback | None = None
        # Keep a reference to the C thunk for the life of the library: it is called from C.
        self._callback = _SYNTH_CALLBACK(self._dispatch)
        lib.espeak_SetSynthCallback(self._callback)
        self._current_voice: str | None = None
        self._voices: list[EspeakVoiceInfo] | None = None
        # espeak's text reader keeps state between calls in globals: a character read ahead
        # past a clause end (``ungot_char``), the phoneme-input flag of the last synth. Only
        # ``espeak_Synth`` resets it (``InitText``); ``espeak_TextToPhonemes`` does not, so G2P
        # after a synth that stopped mid-text read the aborted text's next letter first ("Zwölf"
        # aborted → "Hallo" came back as "ts ɛt h a l oː"). Set after every synth, cleared by
        # :meth:`_reset_reader`.
        self._reader_dirty = False

    # -- callback ---------------------------------------------------------------------------

    def _dispatch(self, wav: Any, numsamples: int, events: Any) -> int:
        # Called from C inside espeak_Synth (on the thread that called it, under LOCK).
        handler = self._on_audio
        if handler is None:
            return 1
        try:
            audio = ctypes.string_at(wav, numsamples * 2) if numsamples > 0 and wav else b""
            copied: list[EspeakEvent] = []
            i = 0
            while events:
                ev = events[i]
                if ev.type == EVENT_LIST_TERMINATED:
                    break
                phoneme = ""
                number = 0
                if ev.type == EVENT_PHONEME:
                    # Names longer than 8 bytes arrive cut (no NUL): drop a split character.
                    raw = bytes(ev.id.string).split(b"\0", 1)[0]
                    phoneme = raw.decode("utf-8", "ignore")
                elif ev.type in (EVENT_WORD, EVENT_SENTENCE, EVENT_END):
                    number = ev.id.number
                copied.append(
                    EspeakEvent(
                        type=ev.type,
                        audio_ms=ev.audio_position,
                        text_position=ev.text_position,
                        length=ev.length,
                        number=number,
                        phoneme=phoneme,
                    )
                )
                i += 1
            return 0 if handler(audio, copied) else 1
        except BaseException:
            return 1

    # -- voices -----------------------------------------------------------------------------

    def list_voices(self) -> list[EspeakVoiceInfo]:
        """Every voice espeak-ng offers (cached; the data files do not change at run time)."""
        with LOCK:
            if self._voices is None:
                arr = self._lib.espeak_ListVoices(None)
                voices: list[EspeakVoiceInfo] = []
                i = 0
                while arr[i]:
                    v = arr[i].contents
                    voices.append(
                        EspeakVoiceInfo(
                            name=_decode(v.name),
                            identifier=_decode(v.identifier),
                            languages=_parse_languages(v.languages),
                            gender=int(v.gender),
                        )
                    )
                    i += 1
                self._voices = voices
            return list(self._voices)

    def set_voice(self, name: str) -> None:
        """Select a voice by name, identifier or language code (``"de"``, ``"en-us"``)."""
        with LOCK:
            if name == self._current_voice:
                return
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                # Not a voice name: try it as a language code ("en-gb"), as espeak's own
                # command line does.
                spec = _Voice()
                lang = ctypes.create_string_buffer(name.encode())
                spec.languages = ctypes.cast(lang, ctypes.c_void_p).value
                if self._lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
                    raise EspeakError(f"espeak-ng has no voice {name!r}")
            self._current_voice = name

    def set_parameters(self, *, rate: int, pitch: int, volume: int, pitch_range: int) -> None:
        with LOCK:
            for param, value in (
                (PARAM_RATE, rate),
                (PARAM_PITCH, pitch),
                (PARAM_VOLUME, volume),
                (PARAM_RANGE, pitch_range),
            ):
                if self._lib.espeak_SetParameter(param, value, 0) != 0:
                    raise EspeakError(f"espeak-ng refused parameter {param}={value}")

    # -- synthesis --------------------------------------------------------------------------

    def synth(
        self,
        text: str,
        on_audio: AudioCallback,
        *,
        end_pause: bool = True,
        phoneme_input: bool = False,
    ) -> bool:
        """Synthesize ``text`` (plain UTF-8, no SSML) calling ``on_audio`` per buffer.

        With ``phoneme_input``, text inside ``[[ ]]`` is read as espeak phoneme mnemonics.

        Blocks until done or until ``on_audio`` returns False; returns False if aborted.
        Call :meth:`set_voice` and :meth:`set_parameters` first, under the same :data:`LOCK`.
        """
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        aborted = False

        def guarded(audio: bytes, events: list[EspeakEvent]) -> bool:
            nonlocal aborted
            keep = on_audio(audio, events)
            if not keep:
                aborted = True
            return keep

        with LOCK:
            self._on_audio = guarded
            try:
                flags = (
                    CHARS_UTF8
                    | (ENDPAUSE if end_pause else 0)
                    | (PHONEME_INPUT if phoneme_input else 0)
                )
                rc = self._lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, flags, None, None)
            finally:
                self._on_audio = None
                self._reader_dirty = True
        if rc != 0 and not aborted:
            raise EspeakError(f"espeak_Synth failed with code {rc}")
        return not aborted

    def text_to_phonemes(self, text: str, voice: str) -> list[str]:
        """IPA for ``text`` in ``voice``'s language, one string per clause; words are separated
        by spaces and phonemes by ``_`` (so multi-letter phonemes such as ``aɪ`` stay whole)."""
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        mode = PHONEMES_IPA | (ord("_") << 8)
        out: list[str] = []
        with LOCK:
            self.set_voice(voice)
            if self._reader_dirty:
                self._reset_reader()
            # Each call translates up to the next clause end and advances ``ptr``; NULL at end.
            # Read to the end, so nothing is left over for the next call; a loop cut short (an
            # error) leaves the reader to be reset.
            self._reader_dirty = True
            for _ in range(len(data) + 1):
                if not ptr.value:
                    self._reader_dirty = False
                    break
                res = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), CHARS_UTF8, mode)
                if res:
                    out.append(res.decode("utf-8", "replace"))
        return out

    def _reset_reader(self) -> None:
        """Clear the text reader's state left by the last synth (see ``_reader_dirty``).

        An empty ``espeak_Synth`` runs the library's own ``InitText`` and reads nothing, so it
        leaves nothing behind; it costs well under a millisecond. Call under :data:`LOCK`.
        """
        data = b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        self._on_audio = lambda audio, events: True  # keep going: an abort could read ahead
        try:
            rc = self._lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        finally:
            self._on_audio = None
        if rc != 0:
            raise EspeakError(f"espeak_Synth failed with code {rc} while resetting the reader")
        self._reader_dirty = False


_LIBRARY: EspeakLibrary | None = None


def get_library() -> EspeakLibrary:
    """The process-wide espeak-ng library, loaded and initialised on first use."""
    global _LIBRARY
    with LOCK:
        if _LIBRARY is None:
            try:
                import espeakng_loader
            except ImportError as exc:  # pragma: no cover - a hard dependency
                raise EspeakError(
                    "espeak-ng is not installed. Install it with: pip install espeakng-loader"
                ) from exc
            _LIBRARY = EspeakLibrary(
                espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
            )
        return _LIBRARY
