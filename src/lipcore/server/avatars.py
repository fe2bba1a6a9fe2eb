"""Avatars on disk: built in a worker thread with bounded concurrency, persisted under
``<data_dir>/avatars/<avatar_id>/`` (so they survive a restart), read back by id."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from lipcore.models import AvatarManifest
from lipcore.server.errors import AvatarNotFoundError, BuildBusyError
from lipcore.server.settings import ServerSettings
from lipcore.server.storage import StorageError, fetch_into_cache, open_storage

__all__ = ["AvatarRecord", "AvatarStore", "new_avatar_id"]

logger = logging.getLogger("lipcore.server.avatars")

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{6,80}$")


def new_avatar_id() -> str:
    """An unguessable avatar id: asset URLs carry it and are served without the API key."""
    return "a_" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class AvatarRecord:
    """What the server needs of an avatar: its directory and validated manifest."""

    avatar_id: str
    directory: Path
    manifest: AvatarManifest

    @property
    def lipsync_type(self) -> str:
        return str(self.manifest.lipsync.get("type", "sprites"))

    def file(self, rel: str) -> Path:
        """The asset ``rel`` (a path inside the avatar directory), or
        :class:`AvatarNotFoundError` if it is missing or points outside."""
        root = self.directory.resolve()
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            raise AvatarNotFoundError(f"avatar {self.avatar_id!r} has no file {rel!r}")
        return path

    def asset_files(self) -> dict[str, str]:
        """Asset key → relative path, for every file the manifest names that exists."""
        m = self.manifest
        files: dict[str, str] = {"idle": m.idle.file, "mouth_track": m.idle.mouth_track,
                                 "photo": m.photo.file}
        for key, value in m.lipsync.items():
            if key != "type" and isinstance(value, str):
                files[key] = value
        extra = m.model_extra or {}
        if isinstance(extra.get("preview"), str):
            files["preview"] = extra["preview"]
        if "preview" not in files and (self.directory / "preview.png").is_file():
            files["preview"] = "preview.png"
        if "mask" not in files and (self.directory / "mask_mouth.png").is_file():
            files["mask"] = "mask_mouth.png"
        return {k: v for k, v in files.items() if (self.directory / v).is_file()}

    def describe(self, url: Callable[[str], str]) -> dict[str, Any]:
        """The ``POST /avatarize-2d`` / ``GET /avatars/{id}`` body; ``url(rel)`` makes asset
        URLs."""
        files = self.asset_files()
        lip = self.manifest.lipsync

        def pick(*keys: str) -> str | None:
            for k in keys:
                if k in files:
                    return url(files[k])
            return None

        assets: dict[str, Any] = {
            "type": self.lipsync_type,
            "mask_url": pick("mask", "mask_png") or "",
            "roi": self.manifest.roi.model_dump(),
            "mouth_track_url": pick("mouth_track"),
            "files": {k: url(v) for k, v in files.items()},
        }
        atlas = pick("atlas_json", "atlas")
        if atlas:
            assets["atlas_url"] = atlas
        mesh = pick("meshdef", "meshdef_json", "mesh")
        if mesh:
            assets["meshdef_url"] = mesh
        model = pick("model", "reference", "face_crop")
        if model and lip.get("type") == "onnx":
            assets["model_url"] = model
        return {
            "avatar_id": self.avatar_id,
            "idle_url": url(files.get("idle", self.manifest.idle.file)),
            "lipsync_assets": assets,
            "preview_url": pick("preview"),
            "idle": {"fps": self.manifest.idle.fps, "frames": self.manifest.idle.frames,
                     "seconds": self.manifest.idle.seconds},
            "photo": {"width": self.manifest.photo.width, "height": self.manifest.photo.height},
            "created_at": self.manifest.created_at,
        }


def _read_manifest(directory: Path, avatar_id: str) -> AvatarManifest:
    load_avatar: Callable[[Path], Any] | None
    try:
        from lipcore.avatar.store import load_avatar
    except ImportError:  # the avatar store is optional for serving prebuilt avatars
        load_avatar = None
    try:
        if load_avatar is not None:
            manifest: AvatarManifest = load_avatar(directory).manifest
            return manifest
        return AvatarManifest.model_validate_json(
            (directory / "manifest.json").read_text(encoding="utf-8")
        )
    except Exception as exc:
        logger.warning("avatar %s is unreadable: %s", avatar_id, exc)
        raise AvatarNotFoundError(
            f"avatar {avatar_id!r} exists on disk but cannot be read ({type(exc).__name__}); "
            "build it again"
        ) from exc


class AvatarStore:
    """Avatars under ``<data_dir>/avatars``. Reads are cached; builds run in worker threads,
    at most ``build_concurrency`` at once and ``max_pending_builds`` waiting."""

    def __init__(self, settings: ServerSettings, engine: Any) -> None:
        self.settings = settings
        self.engine = engine
        self.root = Path(settings.data_dir) / "avatars"
        self._cache: dict[str, AvatarRecord] = {}
        self._sem: asyncio.Semaphore | None = None
        self._pending = 0
        # Shared avatar storage (s3://...; lipcore.server.storage): then `root` is this
        # worker's cache of it, filled on first use, and builds are published there.
        self.storage = open_storage(settings.avatar_storage)

    async def ensure(self, avatar_id: str) -> None:
        """With shared storage: fetch the avatar into this worker's cache in a worker thread
        (so a first use does not stall the event loop); nothing to do when it is cached."""
        if (self.storage is not None and avatar_id not in self._cache and _ID_RE.match(avatar_id)
                and not (self.root / avatar_id / "manifest.json").is_file()):
            await anyio.to_thread.run_sync(self._fetch, avatar_id)

    def _fetch(self, avatar_id: str) -> bool:
        assert self.storage is not None
        try:
            return fetch_into_cache(self.storage, self.root, avatar_id)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"avatar {avatar_id!r} could not be fetched from the avatar "
                               f"storage ({type(exc).__name__}); retry later") from exc

    async def alist_ids(self, limit: int = 1000) -> list[str]:
        """:meth:`list_ids`; with shared storage, listed there (in a worker thread)."""
        if self.storage is None:
            return self.list_ids(limit)
        ids: list[str] = await anyio.to_thread.run_sync(self.storage.list_ids, limit)
        # A cold worker fills its cache here (each avatar whole, once); one that cannot be
        # fetched now is left out of this answer rather than failing the whole list.
        ready = []
        for avatar_id in ids:
            try:
                await self.ensure(avatar_id)
            except StorageError as exc:
                logger.warning("avatar %s left out of the list: %s", avatar_id, exc)
                continue
            ready.append(avatar_id)
        return ready

    def get(self, avatar_id: str) -> AvatarRecord:
        """The avatar ``avatar_id`` or :class:`AvatarNotFoundError`."""
        rec = self._cache.get(avatar_id)
        if rec is not None:
            return rec
        if not _ID_RE.match(avatar_id):
            raise AvatarNotFoundError(f"no avatar {avatar_id!r}: not a valid avatar id")
        directory = self.root / avatar_id
        if not (directory / "manifest.json").is_file() and (
                self.storage is None or not self._fetch(avatar_id)):
            raise AvatarNotFoundError(
                f"no avatar {avatar_id!r}; create one with POST /avatarize-2d"
            )
        rec = AvatarRecord(avatar_id, directory, _read_manifest(directory, avatar_id))
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[avatar_id] = rec
        return rec

    def list_ids(self, limit: int = 1000) -> list[str]:
        """Ids of the complete avatars on disk (those with a manifest), newest first."""
        if not self.root.is_dir():
            return []
        found = [
            d for d in self.root.iterdir()
            if _ID_RE.match(d.name) and (d / "manifest.json").is_file()
        ]  # fmt: skip
        found.sort(key=lambda d: (d / "manifest.json").stat().st_mtime, reverse=True)
        return [d.name for d in found[:limit]]

    def check_photo(self, data: bytes) -> Any:
        """Refuse an upload over the configured bounds or not an image (raises the avatar
        package's ImageError family: 413 for bounds, 422 otherwise). Runs in a thread."""
        from lipcore.avatar.image import load_photo

        return load_photo(
            data,
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_image_pixels,
            max_side=self.settings.max_image_side,
        )

    async def build(self, data: bytes, *, backend: str | None = None) -> AvatarRecord:
        """Build an avatar from photo bytes (checked first) in a worker thread."""
        backend = backend or self.settings.default_backend
        if self._pending >= self.settings.build_concurrency + self.settings.max_pending_builds:
            raise BuildBusyError(
                f"{self._pending} avatar builds are running or waiting (limit "
                f"{self.settings.build_concurrency + self.settings.max_pending_builds}); "
                "retry in a minute"
            )
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.settings.build_concurrency)
        self._pending += 1
        try:
            rgb = await anyio.to_thread.run_sync(self.check_photo, data)
            # Fail fast on an unknown back end, before minutes of building.
            self.engine.lipsync_backend(backend)
            async with self._sem:
                avatar_id = new_avatar_id()
                out_dir = self.root / avatar_id
                self.root.mkdir(parents=True, exist_ok=True)
                await anyio.to_thread.run_sync(self._build_sync, rgb, out_dir, backend,
                                               avatar_id)
        finally:
            self._pending -= 1
        logger.info("avatar built", extra={"avatar_id": avatar_id, "backend": backend})
        return self.get(avatar_id)

    def _build_sync(self, rgb: Any, out_dir: Path, backend: str, avatar_id: str) -> None:
        from lipcore.avatar.store import build_avatar

        try:
            build_avatar(
                rgb,
                out_dir,
                backend=backend,
                seconds=self.settings.idle_seconds,
                fps=self.settings.idle_fps,
                engine=self.engine,
                avatar_id=avatar_id,
            )
            if self.storage is not None:  # published last: listed only once complete
                self.storage.publish(avatar_id, out_dir)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
