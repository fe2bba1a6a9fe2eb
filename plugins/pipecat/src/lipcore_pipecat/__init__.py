"""lipcore in Pipecat pipelines.

* :class:`LipcoreTTSService`: speech from lipcore's TTS sources (espeak-ng offline, ElevenLabs)
  with Pipecat's audio and word frames plus lipcore's phoneme-exact viseme frames.
* :class:`LipcoreFrameSerializer`: Pipecat's WebSocket transports speak lipcore's wire protocol
  v1, so lipcore's web and Flutter clients are Pipecat clients that draw the mouth themselves.
* :class:`LipcoreVideoService`: the avatar as video frames in step with the TTS audio, for any
  Pipecat transport (lipcore's live renderer).
"""

from lipcore_pipecat.frames import (
    LIPCORE_LABEL,
    LipcoreTimingsFrame,
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)
from lipcore_pipecat.serializer import LipcoreFrameSerializer
from lipcore_pipecat.tts import LipcoreTTSService
from lipcore_pipecat.video import LipcoreVideoService

__all__ = [
    "LIPCORE_LABEL",
    "LipcoreFrameSerializer",
    "LipcoreTTSService",
    "LipcoreTimingsFrame",
    "LipcoreUtteranceEndFrame",
    "LipcoreUtteranceStartFrame",
    "LipcoreVideoService",
    "LipcoreVisemesFrame",
]
