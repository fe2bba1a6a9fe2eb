"""lipcore-wav2lip: lipcore's variant C, a Wav2Lip ONNX model that renders the mouth from audio.

backend = Wav2LipBackend("wav2lip.onnx")        # or LIPCORE_WAV2LIP_MODEL
renderer = backend.open_renderer(avatar)
stream = renderer.stream(sample_rate=22050)
for chunk in tts_chunks:
    for patch in stream.push(chunk.audio, chunk.pts_ms):
        await transport.send_bytes(patch.encode(utterance=1))
for patch in stream.finish(): ...
"""

from __future__ import annotations

from lipcore_wav2lip.backend import PatchStream, Wav2LipBackend, Wav2LipRenderer
from lipcore_wav2lip.errors import (
    AvatarAssetError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    ModelSignatureError,
    RuntimeUnavailableError,
)
from lipcore_wav2lip.patches import MouthPatch, PatchFrame, decode_patch_frame
from lipcore_wav2lip.runtime import Wav2LipModel, convert_to_fp16, select_providers

__all__ = [
    "AvatarAssetError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelSignatureError",
    "MouthPatch",
    "PatchFrame",
    "PatchStream",
    "RuntimeUnavailableError",
    "Wav2LipBackend",
    "Wav2LipModel",
    "Wav2LipRenderer",
    "convert_to_fp16",
    "decode_patch_frame",
    "select_providers",
]

__version__ = "0.1.0"
