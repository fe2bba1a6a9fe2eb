"""lipcore in Pipecat pipelines.

* :class:`LipcoreTTSService`: speech from lipcore's TTS sources (espeak-ng offline, ElevenLabs)
  with Pipecat's audio and word frames plus lipcore's phoneme-exact viseme frames.
* :class:`LipcoreFrameSerializer`: Pipecat's WebSocket transports speak lipcore's wire protocol
  v1, so lipcore's web and Flutter clients are Pipecat clients that draw the mouth themselves.
"""

from lipcore_pipecat.frames import (
    LIPCORE_LABEL,
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)
from lipcore_pipecat.serializer import LipcoreFrameSerializer
from lipcore_pipecat.tts import LipcoreTTSService

__all__ = [
    "LIPCORE_LABEL",
    "LipcoreFrameSerializer",
    "LipcoreTTSService",
    "LipcoreUtteranceEndFrame",
    "LipcoreUtteranceStartFrame",
    "LipcoreVisemesFrame",
]
