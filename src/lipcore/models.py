"""Pydantic models of every contract lipcore exposes (REST bodies, WebSocket events, asset files).

The JSON Schemas in ``docs/schema/`` are generated from these (``lipcore schema``) and a test
keeps them current. Extend the contracts, never break them: new fields are optional.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ROI",
    "AtlasCell",
    "AtlasJson",
    "AvatarManifest",
    "AvatarizeResponse",
    "Grid",
    "LipsyncAssets",
    "MeshDef",
    "MouthTrack",
    "OkResponse",
    "SessionCreate",
    "SessionCreated",
    "SpeakRequest",
    "VisemeEvent",
    "export_schemas",
]

#: A lipsync back end's kind: an open name, whatever a plugin registers (``"sprites"``,
#: ``"mesh"``, ``"onnx"``, a third party's). Only its shape is checked here; whether it is
#: installed is the plugin registry's call.
BackendType = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,39}$",
        description="the lipsync back end's registered name (sprites, mesh, onnx, a plugin's)",
        examples=["sprites", "mesh", "onnx"],
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenModel(BaseModel):
    """Asset files may carry more than the contract names (extensions are allowed)."""

    model_config = ConfigDict(extra="allow")


class ROI(_Model):
    """The mouth region of interest in photo pixels."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)


class Grid(_Model):
    cols: int = Field(gt=0)
    rows: int = Field(gt=0)


class LipsyncAssets(_Model):
    """What a client needs to draw an avatar's mouth. ``type``, ``mask_url``, ``roi`` and
    ``mouth_track_url`` are the core's; the asset URLs come from the back end's declared
    client assets (``LipsyncBackend.client_assets``): the first-party back ends send
    ``atlas_url``, ``meshdef_url`` and ``model_url``, a plugin's back end may send its own
    ``<name>_url`` fields."""

    model_config = ConfigDict(extra="allow")

    type: BackendType
    atlas_url: str | None = None
    meshdef_url: str | None = None
    mask_url: str
    roi: ROI
    model_url: str | None = None  # a model file the client runs (none for server-rendered C)
    mouth_track_url: str | None = None
    renderer_url: str | None = Field(
        default=None, description="the back end's web renderer ES module, if it ships one"
    )


class AvatarizeResponse(_Model):
    avatar_id: str
    idle_url: str
    lipsync_assets: LipsyncAssets


class SessionCreate(_Model):
    avatar_id: str
    voice_id: str
    tts: str | None = Field(
        default=None, description="TTS source name; the server default if unset"
    )


class SessionCreated(_Model):
    session_id: str
    ws_url: str
    webrtc_audio_url: str | None = None


class SpeakRequest(_Model):
    text: str
    barge_in: bool = False


class OkResponse(_Model):
    ok: Literal[True] = True


class VisemeEvent(_Model):
    """``{"type": "viseme", "pts_ms": 123456, "weights": {"MBP": 0.8, "O": 0.2}}``"""

    type: Literal["viseme"] = "viseme"
    pts_ms: float
    weights: dict[str, float]


class AtlasCell(_Model):
    x: int
    y: int
    w: int
    h: int


class AtlasJson(_OpenModel):
    """``atlas.json`` of variant A."""

    grid: Grid
    classes: list[str]
    mask: str
    roi: ROI
    cells: dict[str, AtlasCell] | None = None


class MeshDef(_OpenModel):
    """``meshdef.json`` of variant B. ``grid`` counts control points per axis (16×12 by
    default), spread evenly over the ROI with the outer ones on its border; ``targets`` holds, per
    viseme, one ``[dx, dy]`` offset in ROI pixels per control point, row-major."""

    grid: Grid
    roi: ROI
    targets: dict[str, list[tuple[float, float]]]


class MouthTrack(_Model):
    """Per idle-loop frame, the affine that maps photo pixels to that frame's pixels:
    ``x' = a*x + b*y + c``, ``y' = d*x + e*y + f`` stored as ``[a, b, c, d, e, f]``."""

    fps: float
    affines: list[tuple[float, float, float, float, float, float]]


class PhotoInfo(_Model):
    file: str
    width: int
    height: int


class IdleInfo(_Model):
    file: str
    fps: float
    frames: int
    seconds: float
    mouth_track: str


class AvatarManifest(_OpenModel):
    """``manifest.json`` at the root of an avatar directory."""

    manifest_version: Literal[1] = 1
    avatar_id: str
    created_at: str
    photo: PhotoInfo
    roi: ROI
    lipsync: dict[str, object] = Field(
        description="type plus back-end asset paths relative to the avatar directory"
    )
    idle: IdleInfo
    versions: dict[str, str] = Field(default_factory=dict)


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "avatarize_response": AvatarizeResponse,
    "session_create": SessionCreate,
    "session_created": SessionCreated,
    "speak_request": SpeakRequest,
    "ok_response": OkResponse,
    "viseme_event": VisemeEvent,
    "atlas": AtlasJson,
    "meshdef": MeshDef,
    "mouth_track": MouthTrack,
    "avatar_manifest": AvatarManifest,
}


def schemas() -> dict[str, str]:
    """File name → JSON Schema text, as written to ``docs/schema/``."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in SCHEMA_MODELS.items()
    }


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in schemas().items():
        path = directory / fname
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
