"""The avatar directory: build one from a photo (atomically), load one back.

Layout of an avatar directory (all paths in the manifest are relative to it)::

    manifest.json        lipcore.models.AvatarManifest (written last)
    photo.jpg            the normalised photo (upright RGB, at most 2048 px)
    idle.mp4             the seamless idle loop (H.264, faststart)
    mouth_track.json     lipcore.models.MouthTrack: one photo→frame affine per idle frame
    mask_mouth.png ...   the mouth model's files (MouthModel.save)
    atlas.png/json or meshdef.json ...   the lipsync back end's assets (build_assets)
    preview.png          contact sheet: the 12 visemes on the face + idle keyframes

A build writes everything into a hidden sibling directory and renames it into place only when
complete, so a crash or a kill at any point never leaves a directory that :func:`load_avatar`
accepts as an avatar (an older avatar at the same place stays intact until the swap).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from lipcore.avatar.errors import AvatarLoadError
from lipcore.avatar.image import PhotoSource, load_photo
from lipcore.errors import InputError
from lipcore.models import AvatarManifest, IdleInfo, MouthTrack, PhotoInfo

if TYPE_CHECKING:
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.interfaces import LipsyncBackend
    from lipcore.plugins import PluginRegistry

__all__ = [
    "AVATAR_ID_PATTERN",
    "MANIFEST_FILE",
    "STAGES",
    "Avatar",
    "BackendResolver",
    "ProgressCallback",
    "RegistryResolver",
    "build_avatar",
    "is_avatar_id",
    "load_avatar",
]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
PHOTO_FILE = "photo.jpg"
IDLE_FILE = "idle.mp4"
MOUTH_TRACK_FILE = "mouth_track.json"
PREVIEW_FILE = "preview.png"
THUMBNAIL_FILE = "thumbnail.jpg"
#: Side (pixels) of the square face thumbnail an avatar list shows.
THUMBNAIL_SIZE = 160

#: ``progress(stage, overall_fraction)``: the stage being worked on (one of :data:`STAGES`)
#: and how much of the whole build is done, in [0, 1].
ProgressCallback = Callable[[str, float], None]

#: Build stages and their rough share of the build time (measured, see docs/benchmarks.md),
#: used to turn per-stage progress into one overall fraction.
STAGES: dict[str, float] = {
    "load": 0.02,
    "face": 0.04,
    "mouth": 0.12,
    "assets": 0.20,
    "idle": 0.45,
    "preview": 0.12,
    "write": 0.05,
}

#: The one avatar id rule (the CLI, the library and the server): 1-64 letters, digits, ``_``,
#: ``-`` or ``.``, starting with a letter or digit (so never ``.``/``..`` or a hidden name).
AVATAR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID_RE = re.compile(AVATAR_ID_PATTERN)


def is_avatar_id(avatar_id: str) -> bool:
    """Whether ``avatar_id`` follows :data:`AVATAR_ID_PATTERN`."""
    return _ID_RE.match(avatar_id) is not None


class BackendResolver(Protocol):
    """What building an avatar needs of an engine: the back end for a kind, and the kind's
    canonical name (an alias resolves before anything is written). :class:`lipcore.Engine`
    is one; so is :class:`RegistryResolver`."""

    def lipsync_backend(self, type_: str, *, avatar: str = "") -> LipsyncBackend: ...

    def lipsync_kind(self, type_: str, *, avatar: str = "") -> str: ...


class RegistryResolver:
    """A :class:`BackendResolver` straight over the installed plugins (no engine needed)."""

    def __init__(self, registry: PluginRegistry | None = None) -> None:
        from lipcore.plugins import PluginRegistry, get_plugin_manager

        self.registry = registry or PluginRegistry(get_plugin_manager())
        self._backends: dict[str, LipsyncBackend] = {}

    def lipsync_kind(self, type_: str, *, avatar: str = "") -> str:
        context = f"avatar {avatar!r}" if avatar else ""
        return self.registry.get("lipsync_backends", type_, context=context).name

    def lipsync_backend(self, type_: str, *, avatar: str = "") -> LipsyncBackend:
        kind = self.lipsync_kind(type_, avatar=avatar)
        if kind not in self._backends:
            self._backends[kind] = self.registry.create("lipsync_backends", kind)
        return self._backends[kind]


class Avatar:
    """A loaded avatar directory. Cheap to create; decoded frames are cached on first use."""

    def __init__(self, directory: Path, manifest: AvatarManifest, mouth_track: MouthTrack) -> None:
        self.directory = directory
        self.manifest = manifest
        self.mouth_track = mouth_track
        self._photo: npt.NDArray[np.uint8] | None = None
        self._idle: list[npt.NDArray[np.uint8]] | None = None
        #: Seconds per build stage, set on the avatar :func:`build_avatar` returns.
        self.build_seconds: dict[str, float] | None = None
        #: Process CPU seconds per build stage (all threads), likewise.
        self.build_cpu_seconds: dict[str, float] | None = None

    def __repr__(self) -> str:
        return f"Avatar(id={self.id!r}, type={self.lipsync_type!r}, directory='{self.directory}')"

    @property
    def id(self) -> str:
        """The avatar id (``manifest.avatar_id``)."""
        return self.manifest.avatar_id

    @property
    def lipsync_type(self) -> str:
        """The lipsync back end this avatar was built for (``"sprites"``, ``"mesh"``, ...)."""
        return str(self.manifest.lipsync["type"])

    @property
    def extra(self) -> dict[str, Any]:
        """Manifest fields beyond the contract (face summary, build timings, checks)."""
        return dict(self.manifest.model_extra or {})

    def asset(self, rel: str) -> Path:
        """Absolute path of a file named in the manifest; refuses paths leaving the directory."""
        return _inside(self.directory, rel)

    def photo(self) -> npt.NDArray[np.uint8]:
        """The normalised photo (RGB uint8), as the avatar was built from it."""
        if self._photo is None:
            self._photo = load_photo(self.asset(self.manifest.photo.file))
        return self._photo

    def idle_frames(self) -> list[npt.NDArray[np.uint8]]:
        """Every frame of the idle loop, decoded once (RGB uint8)."""
        if self._idle is None:
            from lipcore.media import read_frames

            self._idle = list(read_frames(self.asset(self.manifest.idle.file)))
        return self._idle


def _inside(directory: Path, rel: str) -> Path:
    """The one path guard: ``rel`` inside ``directory``, else :class:`AvatarLoadError`."""
    path = (directory / rel).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise AvatarLoadError(
            f"avatar {directory} names the file {rel!r}, which lies outside the avatar "
            "directory; the manifest is corrupt or hostile. Rebuild the avatar"
        )
    return path


def load_avatar(directory: str | Path) -> Avatar:
    """Load and validate an avatar directory.

    Raises :class:`AvatarLoadError` when the directory, its manifest or a file the manifest
    names is missing, or the manifest does not validate.
    """
    directory = Path(directory).expanduser()
    manifest_path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise AvatarLoadError(
            f"no avatar at {directory}: the directory does not exist; build one with "
            "`lipcore avatarize PHOTO --out DIR`"
        )
    if not manifest_path.is_file():
        raise AvatarLoadError(
            f"{directory} is not an avatar: {MANIFEST_FILE} is missing (an unfinished or "
            "foreign directory); rebuild it with `lipcore avatarize`"
        )
    try:
        manifest = AvatarManifest.model_validate_json(manifest_path.read_bytes())
    except (ValidationError, ValueError, OSError) as exc:
        raise AvatarLoadError(
            f"{manifest_path} is not a valid avatar manifest ({exc}); rebuild the avatar"
        ) from exc
    if "type" not in manifest.lipsync:
        raise AvatarLoadError(f"{manifest_path}: 'lipsync' has no 'type'; rebuild the avatar")
    needed = [manifest.photo.file, manifest.idle.file, manifest.idle.mouth_track]
    needed += [v for k, v in manifest.lipsync.items() if k != "type" and isinstance(v, str)]
    for rel in needed:
        if not _inside(directory, rel).is_file():
            raise AvatarLoadError(
                f"avatar {manifest.avatar_id!r} at {directory} is incomplete: {rel} is missing; "
                "rebuild it with `lipcore avatarize`"
            )
    try:
        track = MouthTrack.model_validate_json(
            _inside(directory, manifest.idle.mouth_track).read_bytes()
        )
    except (ValidationError, ValueError) as exc:
        raise AvatarLoadError(
            f"{manifest.idle.mouth_track} of avatar {manifest.avatar_id!r} is invalid ({exc})"
        ) from exc
    if len(track.affines) != manifest.idle.frames:
        raise AvatarLoadError(
            f"avatar {manifest.avatar_id!r}: the mouth track has {len(track.affines)} affines "
            f"but the idle loop {manifest.idle.frames} frames; rebuild the avatar"
        )
    return Avatar(directory, manifest, track)


# ---------------------------------------------------------------------------------- build


class _Stages:
    """Times each stage and reports overall progress."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._done = 0.0

    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            overall = self._done + STAGES[stage] * min(1.0, max(0.0, fraction))
            self.progress(stage, min(1.0, overall / sum(STAGES.values())))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Callable[[float], None]]:
        self.report(name, 0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        yield lambda f: self.report(name, f)
        self.seconds[name] = time.perf_counter() - t0
        # Process CPU time (all threads): on a busy machine, the part of the wall time that is
        # our own work.
        self.cpu_seconds[name] = time.process_time() - c0
        self._done += STAGES[name]
        self.report(name, 0.0)


def _versions(face_model: Path) -> dict[str, str]:
    import importlib.metadata as md

    import lipcore
    from lipcore.avatar.modelfetch import file_sha256

    out = {"lipcore": lipcore.__version__, "face_model_sha256": file_sha256(face_model)}
    for dist in ("mediapipe", "numpy", "opencv-contrib-python", "av"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _default_id(rgb: npt.NDArray[np.uint8]) -> str:
    # Same photo → same id: rebuilding an avatar keeps its URLs.
    return "av-" + hashlib.sha256(rgb.tobytes()).hexdigest()[:12]


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory; choose another path")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / MANIFEST_FILE).is_file():
        raise InputError(
            f"--out {out_dir} is a non-empty directory that is not an avatar; lipcore will not "
            "replace it. Choose a new or empty directory"
        )
    if not overwrite:
        raise InputError(
            f"an avatar already exists at {out_dir}; pass overwrite=True to replace it"
        )


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir``; an existing avatar is replaced."""
    old: Path | None = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out_dir, old)
        else:
            out_dir.rmdir()
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_avatar(
    photo: PhotoSource | npt.NDArray[np.uint8],
    out_dir: str | Path,
    *,
    backend: str = "sprites",
    seconds: float = 4.0,
    fps: float = 25.0,
    engine: BackendResolver | None = None,
    face_model: str | Path | None = None,
    avatar_id: str | None = None,
    progress: ProgressCallback | None = None,
    analyzer: FaceAnalyzer | None = None,
    multiple: Literal["largest", "refuse"] = "largest",
    seed: int = 0,
    overwrite: bool = True,
    name: str | None = None,
) -> Avatar:
    """Turn one photo into an avatar directory at ``out_dir`` and return it loaded.

    Stages (see :data:`STAGES`): load the photo → analyse the face (validated: one usable,
    frontal face) → build the mouth model → the back end's assets (through the plugin system:
    ``engine.lipsync_backend(backend)``) → render the idle loop → write the mouth track,
    photo and manifest → the preview sheet → atomic rename into place.

    ``photo`` is a path, bytes, a PIL image or an RGB array. ``analyzer`` reuses a
    :class:`FaceAnalyzer` (else one is made from ``face_model`` and closed afterwards).
    ``overwrite`` replaces an existing avatar at ``out_dir`` (never a non-avatar directory).
    Raises :class:`lipcore.avatar.errors.ImageError` subclasses for unusable photos and
    :class:`lipcore.errors.PluginNotFoundError` when no back end of that type is installed.
    """
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.avatar.idle import build_idle_loop
    from lipcore.avatar.mouth import build_mouth_model
    from lipcore.avatar.preview import render_preview

    if seconds <= 0 or fps <= 0:
        raise InputError(f"seconds and fps must be positive (got {seconds}, {fps})")
    if avatar_id is not None and not _ID_RE.match(avatar_id):
        raise InputError(
            f"avatar id {avatar_id!r} is not allowed: use 1-64 letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    out_dir = Path(out_dir).expanduser().absolute()
    _check_out_dir(out_dir, overwrite)
    stages = _Stages(progress)
    source_name = f"'{photo}'" if isinstance(photo, (str, Path)) else "the photo"

    with stages.stage("load"):
        if isinstance(photo, np.ndarray):
            if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
                raise InputError(
                    f"an RGB uint8 array of shape (H, W, 3) is needed, got {photo.shape}"
                )
            rgb = np.ascontiguousarray(photo)
        else:
            rgb = load_photo(photo)
    avatar_id = avatar_id or _default_id(rgb)

    own_analyzer = analyzer is None
    with stages.stage("face"):
        fa = analyzer if analyzer is not None else FaceAnalyzer(face_model)
        try:
            face = fa.analyze(rgb, multiple=multiple, source=source_name)
        except BaseException:
            if own_analyzer:
                fa.close()
            raise
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        with stages.stage("mouth"):
            mouth_model = build_mouth_model(rgb, face)
            mouth_files = mouth_model.save(tmp)
        with stages.stage("assets"):
            resolver = engine if engine is not None else RegistryResolver()
            # The manifest names the canonical kind, never an alias ("wav2lip" → "onnx").
            backend = resolver.lipsync_kind(backend, avatar=avatar_id)
            lipsync_backend = resolver.lipsync_backend(backend, avatar=avatar_id)
            assets = lipsync_backend.build_assets(mouth_model, tmp)
        with stages.stage("idle") as report:
            idle = build_idle_loop(
                rgb, face, tmp / IDLE_FILE, seconds=seconds, fps=fps, seed=seed, progress=report
            )
        with stages.stage("preview"):
            checks = render_preview(
                rgb,
                mouth_model,
                tmp / IDLE_FILE,
                tmp / PREVIEW_FILE,
                face_bbox=face.bbox,
                frames=idle.frames,
                blink_frames=idle.blink_frames,
                eyelid=idle.eyelid,
                fps=idle.fps,
                analyzer=fa,
                title=f"{avatar_id} · {backend} · {idle.seconds:.1f} s @ {idle.fps:g} fps",
            )
        with stages.stage("write"):
            from PIL import Image

            Image.fromarray(rgb).save(tmp / PHOTO_FILE, quality=95, subsampling=0)
            write_thumbnail(rgb, face.bbox, tmp / THUMBNAIL_FILE)
            (tmp / MOUTH_TRACK_FILE).write_text(idle.mouth_track.model_dump_json(), "utf-8")
            manifest = AvatarManifest(
                avatar_id=avatar_id,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                photo=PhotoInfo(file=PHOTO_FILE, width=rgb.shape[1], height=rgb.shape[0]),
                roi=mouth_model.roi,
                lipsync={"type": backend, **assets},
                idle=IdleInfo(
                    file=IDLE_FILE,
                    fps=idle.fps,
                    frames=idle.frames,
                    seconds=idle.seconds,
                    mouth_track=MOUTH_TRACK_FILE,
                ),
                versions=_versions(fa.model_path),
            )
            # Beyond the contract (AvatarManifest allows extra fields): what a person or a
            # test wants to know about this build.
            extra = {
                # What an avatar list shows: a name (given at upload, else the photo's file
                # name, else the id) and a face thumbnail.
                "name": _clean_name(name) or avatar_id,
                "thumbnail": THUMBNAIL_FILE,
                "preview": PREVIEW_FILE,
                "mouth": {"files": mouth_files, "rest": _jsonable(mouth_model.rest)},
                "face": face.to_dict(),
                "idle_stats": {
                    "blink_frames": idle.blink_frames,
                    "seam_step": idle.seam_step,
                    "typical_step": idle.typical_step,
                    "seed": seed,
                },
                "checks": checks,
                # Seconds per stage so far (the write stage itself is not in yet).
                "build": {"seconds": {k: round(v, 4) for k, v in stages.seconds.items()}},
            }
            manifest = AvatarManifest.model_validate({**manifest.model_dump(), **extra})
            # Written last: a directory without a manifest is never taken for an avatar.
            text = manifest.model_dump_json(indent=2)
            (tmp / MANIFEST_FILE).write_text(text, "utf-8")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if own_analyzer:
            fa.close()
    stages.report("write", 1.0)
    avatar = load_avatar(out_dir)
    avatar.build_seconds = dict(stages.seconds)
    avatar.build_cpu_seconds = dict(stages.cpu_seconds)
    return avatar


def _clean_name(name: str | None) -> str:
    """A display name: one line, at most 80 characters, no control characters."""
    if not name:
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in str(name))
    return " ".join(text.split())[:80]


def write_thumbnail(
    rgb: npt.NDArray[np.uint8], bbox: tuple[float, float, float, float], path: Path
) -> None:
    """A square JPEG of the face (``bbox`` = landmark extent x, y, w, h, with a margin), of
    :data:`THUMBNAIL_SIZE` pixels."""
    from PIL import Image

    height, width = rgb.shape[:2]
    x, y, w, h = bbox
    side = min(max(w, h) * 1.6, width, height)
    cx, cy = x + w / 2, y + h / 2
    x0 = round(min(max(cx - side / 2, 0), width - side))
    y0 = round(min(max(cy - side / 2, 0), height - side))
    crop = Image.fromarray(rgb[y0 : y0 + int(side), x0 : x0 + int(side)])
    crop.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS).save(
        path, quality=85
    )


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays and nested containers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
