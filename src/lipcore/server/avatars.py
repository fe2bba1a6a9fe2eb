"""Avatars on disk: built in a worker thread with bounded concurrency, persisted under
``<data_dir>/avatars/<avatar_id>/`` (so they survive a restart), read back by id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import multiprocessing
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from lipcore.errors import LipcoreError
from lipcore.models import AvatarManifest
from lipcore.server.errors import AvatarNotFoundError, BuildBusyError
from lipcore.server.settings import ServerSettings

__all__ = ["AvatarRecord", "AvatarStore", "new_avatar_id"]

logger = logging.getLogger("lipcore.server.avatars")

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{6,80}$")
#: What a build leaves while it runs: ``build_avatar``'s ``.<id>.building-<hex>`` directory,
#: its ``.<id>.old-<hex>`` swap leftover, and the server's ``.<id>.lock`` (held while building).
_PARTIAL_RE = re.compile(r"^\.([A-Za-z0-9_-]{6,80})\.(building|old)-[0-9a-f]+$")


class BuildFailedError(LipcoreError):
    """The build worker process died (killed, out of memory) before the avatar was done."""

    code = "build_failed"
    http_status = 500


def _lock_path(root: Path, avatar_id: str) -> Path:
    return root / f".{avatar_id}.lock"


def _build_job(data: bytes, out_dir: str, backend: str, avatar_id: str,
               limits: dict[str, int], seconds: float, fps: float, engine: Any = None,
               nice: int = 0) -> None:
    """Check and decode the photo, then build the avatar, holding the avatar's lock file so
    that a restarted server can tell a live build from a dead one. Runs in a build worker
    process (``engine`` None: the worker's default engine; ``nice``: its priority is lowered
    by that much, so that on a shared core the serving loop wins) or, with
    ``build_isolation="thread"``, in a thread of the server with the server's engine."""
    import fcntl
    import os

    if engine is None:
        from lipcore.server import buildworker

        engine = buildworker.engine()
        if nice:
            with contextlib.suppress(OSError):
                os.nice(nice)

    from lipcore.avatar.image import load_photo
    from lipcore.avatar.store import build_avatar

    out = Path(out_dir)
    lock = _lock_path(out.parent, avatar_id)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            rgb = load_photo(data, **limits)
            build_avatar(rgb, out, backend=backend, seconds=seconds, fps=fps, engine=engine,
                         avatar_id=avatar_id)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            lock.unlink(missing_ok=True)


_POOL_CONTEXT: Any = None


def _pool_context() -> Any:
    """The multiprocessing context of build workers: a fork server with the avatar code
    preloaded (a worker starts in milliseconds, and forking from a threaded, serving process
    is avoided); spawn where there is no fork server."""
    global _POOL_CONTEXT
    if _POOL_CONTEXT is None:
        ctx: Any
        try:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["lipcore.server.avatars", "lipcore.server.buildworker"])
        except ValueError:  # pragma: no cover - platforms without fork
            ctx = multiprocessing.get_context("spawn")
        _POOL_CONTEXT = ctx
    return _POOL_CONTEXT


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        missing = AvatarNotFoundError(f"avatar {self.avatar_id!r} has no file {_short(rel)!r}")
        # A NUL byte or an over-long name is no file of ours: refused before the file system
        # sees it (which would answer with a ValueError/OSError, i.e. a 500).
        if "\0" in rel or len(rel) > 1024 or any(len(p) > 255 for p in rel.split("/")):
            raise missing
        root = self.directory.resolve()
        try:
            path = (root / rel).resolve()
            if root not in path.parents or not path.is_file():
                raise missing
        except (OSError, ValueError):
            raise missing from None
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
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def remove_stale_builds(self, *, min_age_s: float = 600.0) -> list[str]:
        """Remove what killed builds left under the avatars directory (called at start):
        partial build directories and avatar directories without a manifest. A partial
        directory whose lock file is still held belongs to a live build (another worker on
        the same data directory) and stays; one without a lock file stays until it is
        ``min_age_s`` old (a build not started by a server). Returns the names removed."""
        import fcntl

        if not self.root.is_dir():
            return []
        removed: list[str] = []
        now = time.time()
        for entry in self.root.iterdir():
            m = _PARTIAL_RE.match(entry.name)
            if m is None and not (_ID_RE.match(entry.name) and entry.is_dir()
                                  and not (entry / "manifest.json").is_file()):
                continue
            avatar_id = m.group(1) if m else entry.name
            lock = _lock_path(self.root, avatar_id)
            if lock.exists():
                with lock.open("a") as fh:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # a live build holds it
                    lock.unlink(missing_ok=True)
            else:
                try:
                    if now - entry.stat().st_mtime < min_age_s:
                        continue
                except OSError:
                    continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        for lock in self.root.glob(".*.lock"):  # locks whose build left nothing behind
            with lock.open("a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue
                lock.unlink(missing_ok=True)
        if removed:
            logger.warning("removed what killed avatar builds left behind",
                           extra={"removed": len(removed)})
        return removed

    def close(self) -> None:
        """Stop the build worker processes (at shutdown): a build still running is ended (its
        partial directory is removed at the next start) rather than holding the exit up."""
        if self._pool is not None:
            workers = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            self._pool = None

    def get(self, avatar_id: str) -> AvatarRecord:
        """The avatar ``avatar_id`` or :class:`AvatarNotFoundError`."""
        rec = self._cache.get(avatar_id)
        if rec is not None:
            return rec
        if not _ID_RE.match(avatar_id):
            raise AvatarNotFoundError(f"no avatar {_short(avatar_id)!r}: not a valid avatar id")
        directory = self.root / avatar_id
        if not (directory / "manifest.json").is_file():
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
            # Fail fast on an unknown back end, before minutes of building.
            self.engine.lipsync_backend(backend)
            # The photo is decoded under the build limit, inside the build worker: decoding
            # is the memory-hungry step, and a handful of parallel uploads must not each hold
            # a full-size image (docs/server.md, "Limits").
            async with self._sem:
                avatar_id = new_avatar_id()
                out_dir = self.root / avatar_id
                self.root.mkdir(parents=True, exist_ok=True)
                await self._run_build(data, out_dir, backend, avatar_id)
        finally:
            self._pending -= 1
        logger.info("avatar built", extra={"avatar_id": avatar_id, "backend": backend})
        return self.get(avatar_id)

    async def _run_build(self, data: bytes, out_dir: Path, backend: str, avatar_id: str) -> None:
        limits = {"max_bytes": self.settings.max_upload_bytes,
                  "max_pixels": self.settings.max_image_pixels,
                  "max_side": self.settings.max_image_side}
        job = functools.partial(_build_job, data, str(out_dir), backend, avatar_id, limits,
                                self.settings.idle_seconds, self.settings.idle_fps)
        if self.settings.build_isolation == "thread":
            await anyio.to_thread.run_sync(functools.partial(job, engine=self.engine))
            return
        # A build is seconds of CPU-bound Python and numpy; in a thread of the server it
        # competes for the GIL with the event loop (/healthz p99 4 → 217 ms during three
        # builds). A worker process per build (fresh for each, so its memory goes back to
        # the system afterwards) keeps the loop free.
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(1, self.settings.build_concurrency),
                mp_context=_pool_context(), max_tasks_per_child=1)
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(job, nice=self.settings.build_nice))
        except concurrent.futures.process.BrokenProcessPool:
            self._pool = None
            shutil.rmtree(out_dir, ignore_errors=True)
            raise BuildFailedError(
                "the avatar build worker stopped before the avatar was done (killed, or out of "
                "memory); try again, or with a smaller photo"
            ) from None

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
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
