"""Errors of the Wav2Lip back end. Each says what is wrong, with which file, and what to do."""

from __future__ import annotations

from lipcore.errors import InputError, LipcoreError

__all__ = [
    "AvatarAssetError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelRunError",
    "ModelSignatureError",
    "RuntimeUnavailableError",
    "SettingsError",
]


class ModelError(InputError):
    """The Wav2Lip model file cannot be used."""

    code = "wav2lip_model"


class ModelNotFoundError(ModelError, FileNotFoundError):
    code = "wav2lip_model_missing"


class ModelFormatError(ModelError):
    """The file is not a readable ONNX model (corrupt, truncated, another format)."""

    code = "wav2lip_model_format"


class ModelSignatureError(ModelError):
    """The ONNX model's inputs/outputs are not Wav2Lip's (mel, face) → face."""

    code = "wav2lip_model_signature"


class AvatarAssetError(InputError):
    """The avatar lacks (or has broken) what the Wav2Lip renderer needs."""

    code = "wav2lip_avatar"


class RuntimeUnavailableError(LipcoreError):
    """The asked-for execution provider (CUDA, TensorRT) is not usable on this machine."""

    code = "wav2lip_runtime"
    http_status = 503


class ModelRunError(LipcoreError):
    """The model loaded but a run failed inside ONNX Runtime. The model is configured on the
    server, not sent by the client: a server fault (500), with the runtime's words kept short."""

    code = "wav2lip_model_run"
    http_status = 500


class SettingsError(InputError):
    """A ``LIPCORE_WAV2LIP_*`` setting (or argument) has a value the back end does not know.
    The message names the setting, the value and the valid values."""

    code = "wav2lip_settings"
