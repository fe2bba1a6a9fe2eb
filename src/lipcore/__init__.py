"""lipcore: one still photo → a live, photo-real 2D talking avatar.

The public API is small: an :class:`Engine` (owning a plugin manager), the typed plugin
interfaces, the pydantic contracts and the errors. See the README for an embedding example.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from lipcore.engine import Engine, EngineSettings, SpeechStep, Utterance, clean_text
from lipcore.errors import (
    InputError,
    LimitError,
    LipcoreError,
    PluginNotFoundError,
    TTSError,
    UnknownVoiceError,
)
from lipcore.hookspecs import hookimpl
from lipcore.interfaces import (
    CharTiming,
    LipsyncBackend,
    MouthRenderer,
    PhonemeTiming,
    Transport,
    TTSCapabilities,
    TTSChunk,
    TTSSource,
    VisemeFrame,
    VisemeMapper,
    VisemeSegment,
    Voice,
)
from lipcore.plugins import PluginRegistry, get_plugin_manager

try:
    __version__ = version("lipcore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CharTiming",
    "Engine",
    "EngineSettings",
    "InputError",
    "LimitError",
    "LipcoreError",
    "LipsyncBackend",
    "MouthRenderer",
    "PhonemeTiming",
    "PluginNotFoundError",
    "PluginRegistry",
    "SpeechStep",
    "TTSCapabilities",
    "TTSChunk",
    "TTSError",
    "TTSSource",
    "Transport",
    "UnknownVoiceError",
    "Utterance",
    "VisemeFrame",
    "VisemeMapper",
    "VisemeSegment",
    "Voice",
    "__version__",
    "clean_text",
    "get_plugin_manager",
    "hookimpl",
]
