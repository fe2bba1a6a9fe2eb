"""ElevenLabs streaming TTS for lipcore: audio with character timings → visemes.

    import lipcore
    engine = lipcore.Engine()          # finds this plugin through its entry point
    async for step in engine.speak("Guten Tag!", tts="elevenlabs", voice="<voice id>"):
        ...

The local mock of the vendor (tests, benchmarks, offline development) is
:mod:`lipcore_tts_elevenlabs.mock`.
"""

from __future__ import annotations

from lipcore_tts_elevenlabs.alignment import CharTimeline
from lipcore_tts_elevenlabs.errors import (
    ElevenLabsAuthError,
    ElevenLabsConfigError,
    ElevenLabsConnectionError,
    ElevenLabsContextLimitError,
    ElevenLabsError,
    ElevenLabsIdleTimeoutError,
    ElevenLabsInvalidRequestError,
    ElevenLabsQuotaError,
    ElevenLabsRateLimitError,
    ElevenLabsTimeoutError,
)
from lipcore_tts_elevenlabs.settings import (
    DEFAULT_BASE_URL,
    EU_BASE_URL,
    ElevenLabsSettings,
    VoiceProfile,
    VoiceSettings,
)
from lipcore_tts_elevenlabs.source import ElevenLabsTTSSource

__all__ = [
    "DEFAULT_BASE_URL",
    "EU_BASE_URL",
    "CharTimeline",
    "ElevenLabsAuthError",
    "ElevenLabsConfigError",
    "ElevenLabsConnectionError",
    "ElevenLabsContextLimitError",
    "ElevenLabsError",
    "ElevenLabsIdleTimeoutError",
    "ElevenLabsInvalidRequestError",
    "ElevenLabsQuotaError",
    "ElevenLabsRateLimitError",
    "ElevenLabsSettings",
    "ElevenLabsTTSSource",
    "ElevenLabsTimeoutError",
    "VoiceProfile",
    "VoiceSettings",
]
