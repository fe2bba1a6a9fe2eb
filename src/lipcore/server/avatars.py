"""Avatars on disk: built in a worker thread with bounded concurrency, persisted under
``<data_dir>/avatars/<avatar_id>/`` (so they survive a restart), read back by id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
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

from lipcore.avatar.errors import AvatarLoadError
from lipcore.avatar.store import (
    MANIFEST_FILE,
    Avatar,
    BackendResolver,
    is_avatar_id,
    load_avatar,
)
from lipcore.errors import LipcoreError
from lipcore.interfaces import LipsyncBackend
from lipcore.models import AvatarManifest
from lipcore.server.errors import AvatarNotFoundError, BuildBusyError
from lipcore.server.settings import ServerSettings
from lipcore.server.storage import StorageError, fetch_into_cache, open_storage

__all__ = ["AvatarRecord", "AvatarStore", "new_avatar_id"]

logger = logging.getLogger("lipcore.server.avatars")

#: Files of every avatar that clients load, whatever its back end (the core's own): asset key
#: → where the manifest (or the mouth model, for the mask) names it.
_CORE_FILES = ("idle", "mouth_track", "photo", "preview", "mask")
#: What a build leaves while it runs: ``build_avatar``'s ``.<id>.building-<hex>`` directory,
#: its ``.<id>.old-<hex>`` swap leftover, and the server's ``.<id>.lock`` (held while building).
_PARTIAL_RE = re.compile(r"^\.([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\.(building|old)-[0-9a-f]+$")


class BuildFailedError(LipcoreError):
    """The build worker process died (killed, out of memory) before the avatar was done."""

    code = "build_failed"
    http_status = 500


def _lock_path(root: Path, avatar_id: str) -> Path:
    return root / f".{avatar_id}.lock"


def _build_job(data: bytes, out_dir: str, backend: str, avatar_id: str,
               limits: dict[str, int], seconds: float, fps: float, name: str | None = None,
               engine: Any = None, nice: int = 0) -> None:
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
                         avatar_id=avatar_id, name=name)
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
    """An unguessable avatar id: asset URLs carry it and are served without the API key.
    It follows the one id rule (:data:`lipcore.avatar.store.AVATAR_ID_PATTERN`)."""
    return "a_" + secrets.token_urlsafe(16)


def _stamp(manifest: Path) -> str:
    """What tells this process that an avatar on disk changed: its manifest file's identity
    (a rebuild swaps the whole directory in, so the manifest is a new file)."""
    st = manifest.stat()
    return f"{st.st_mtime_ns:x}{st.st_ino:x}{st.st_size:x}"


def _version(manifest: Path) -> str:
    """The avatar's version in its asset URLs: a digest of its manifest's bytes (every build
    writes a new manifest: new id-stamped files, creation time), so every worker that holds a
    copy of the same build, from shared storage, hands out the same URLs."""
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class AvatarRecord:
    """One avatar as the server holds it: loaded once (:class:`lipcore.avatar.store.Avatar`),
    with its back end and whether it can be used here.

    ``backend`` is ``None`` when the manifest's kind is not installed; ``reason`` then says
    why the avatar is unusable (also when the back end's ``availability()`` says it cannot run
    here). ``version`` changes when the avatar is rebuilt; asset URLs carry it. ``stamp``:
    the manifest file's identity when it was loaded (a change reloads it)."""

    avatar: Avatar
    version: str
    backend: LipsyncBackend | None
    reason: str | None
    stamp: str = ""

    @property
    def avatar_id(self) -> str:
        return self.directory.name

    @property
    def directory(self) -> Path:
        return self.avatar.directory

    @property
    def manifest(self) -> AvatarManifest:
        return self.avatar.manifest

    @property
    def usable(self) -> bool:
        return self.reason is None

    @property
    def lipsync_type(self) -> str:
        return self.avatar.lipsync_type

    def file(self, rel: str) -> Path:
        """The asset ``rel`` (a path inside the avatar directory), or
        :class:`AvatarNotFoundError` if it is missing or points outside (the store's one path
        guard)."""
        # A NUL byte or an over-long name is no file of ours: refused before the file system
        # sees it (which would answer with a ValueError/OSError, i.e. a 500).
        if "\0" in rel or len(rel) > 1024 or any(len(p) > 255 for p in rel.split("/")):
            raise AvatarNotFoundError(f"avatar {self.avatar_id!r} has no file {_short(rel)!r}")
        try:
            path = self.avatar.asset(rel)
        except (AvatarLoadError, OSError, ValueError):
            path = None
        if path is None or not path.is_file():
            raise AvatarNotFoundError(f"avatar {self.avatar_id!r} has no file {_short(rel)!r}")
        return path

    def asset_files(self) -> dict[str, str]:
        """Asset key → relative path of what clients may load: the core's files (idle loop,
        mouth track, photo, preview, mouth mask) and exactly the manifest entries the back end
        declares as client assets. Only files that exist."""
        m = self.manifest
        extra = m.model_extra or {}
        files: dict[str, str] = {"idle": m.idle.file, "mouth_track": m.idle.mouth_track,
                                 "photo": m.photo.file}
        if isinstance(extra.get("preview"), str):
            files["preview"] = extra["preview"]
        if isinstance(extra.get("thumbnail"), str):
            files["thumbnail"] = extra["thumbnail"]
        if "preview" not in files and (self.directory / "preview.png").is_file():
            files["preview"] = "preview.png"
        declared = self.backend.client_assets if self.backend is not None else {}
        for key in declared:
            value = m.lipsync.get(key)
            if isinstance(value, str):
                files[key] = value
        if "mask" not in files and (self.directory / "mask_mouth.png").is_file():
            files["mask"] = "mask_mouth.png"  # the mouth model always writes it
        out = {}
        for key, rel in files.items():
            with contextlib.suppress(AvatarNotFoundError):
                self.file(rel)
                out[key] = rel
        return out

    def describe(self, url: Callable[[str], str],
                 renderer_url: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The ``POST /avatarize-2d`` / ``GET /avatars/{id}`` body. ``url(rel)`` makes asset
        URLs; ``renderer_url(path)`` the URL of a file in the back end's static folder."""
        files = self.asset_files()
        assets: dict[str, Any] = {
            "type": self.lipsync_type,
            "mask_url": url(files["mask"]) if "mask" in files else "",
            "roi": self.manifest.roi.model_dump(),
            "mouth_track_url": url(files["mouth_track"]) if "mouth_track" in files else None,
        }
        if self.backend is not None:
            for key, field in self.backend.client_assets.items():
                if key in files and field and field not in assets:
                    assets[field] = url(files[key])
            module = self.backend.web_renderer
            if module and renderer_url is not None and self.backend.static_dir() is not None:
                assets["renderer_url"] = renderer_url(module)
        assets["files"] = {k: url(v) for k, v in files.items()}
        given = (self.manifest.model_extra or {}).get("name")
        name = given if isinstance(given, str) and given else self.avatar_id
        return {
            "avatar_id": self.avatar_id,
            # Shown in avatar lists: the name given at upload (else the photo's file name);
            # avatars built before names existed show their id.
            "name": name,
            "thumbnail_url": url(files["thumbnail"]) if "thumbnail" in files else None,
            "idle_url": url(files.get("idle", self.manifest.idle.file)),
            "lipsync_assets": assets,
            "preview_url": url(files["preview"]) if "preview" in files else None,
            "idle": {"fps": self.manifest.idle.fps, "frames": self.manifest.idle.frames,
                     "seconds": self.manifest.idle.seconds},
            "photo": {"width": self.manifest.photo.width, "height": self.manifest.photo.height},
            "created_at": self.manifest.created_at,
            "usable": self.usable,
            "reason": self.reason,
        }


class AvatarStore:
    """Avatars under ``<data_dir>/avatars``. Reads are cached; builds run in worker threads,
    at most ``build_concurrency`` at once and ``max_pending_builds`` waiting."""

    def __init__(self, settings: ServerSettings, engine: BackendResolver) -> None:
        self.settings = settings
        self.engine = engine
        self.root = Path(settings.data_dir) / "avatars"
        self._cache: dict[str, AvatarRecord] = {}
        self._sem: asyncio.Semaphore | None = None
        self._pending = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        # Shared avatar storage (s3://...; lipcore.server.storage): then `root` is this
        # worker's cache of it, filled on first use, and builds are published there.
        self.storage = open_storage(settings.avatar_storage)

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
            if m is None and not (is_avatar_id(entry.name) and entry.is_dir()
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

    async def ensure(self, avatar_id: str) -> None:
        """With shared storage: fetch the avatar into this worker's cache in a worker thread
        (so a first use does not stall the event loop); nothing to do when it is cached."""
        if (self.storage is not None and avatar_id not in self._cache and is_avatar_id(avatar_id)
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

    async def arecords(self, limit: int = 1000) -> list[AvatarRecord]:
        """:meth:`records`; with shared storage, the avatars listed there (in a worker
        thread), each fetched into this worker's cache on first sight."""
        if self.storage is None:
            return self.records(limit)
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
        return self.records(limit, ids=ready)

    def get(self, avatar_id: str) -> AvatarRecord:
        """The avatar ``avatar_id`` (loaded once, reloaded when rebuilt on disk) or
        :class:`AvatarNotFoundError`. An avatar whose back end is missing or cannot run here
        is returned too, with its ``reason``."""
        if not is_avatar_id(avatar_id):
            raise AvatarNotFoundError(f"no avatar {_short(avatar_id)!r}: not a valid avatar id")
        directory = self.root / avatar_id
        manifest = directory / MANIFEST_FILE
        if not manifest.is_file() and self.storage is not None:
            self._fetch(avatar_id)  # shared storage unreachable: StorageError (503), not a 404
        try:
            stamp = _stamp(manifest)
        except OSError:
            self._cache.pop(avatar_id, None)
            raise AvatarNotFoundError(
                f"no avatar {avatar_id!r}; create one with POST /avatarize-2d"
            ) from None
        rec = self._cache.get(avatar_id)
        if rec is not None and rec.stamp == stamp:
            return rec
        try:
            version = _version(manifest)
        except OSError:
            raise AvatarNotFoundError(f"no avatar {avatar_id!r}") from None
        rec = self._load(avatar_id, directory, version, stamp)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[avatar_id] = rec
        return rec

    def _load(self, avatar_id: str, directory: Path, version: str, stamp: str) -> AvatarRecord:
        try:
            avatar = load_avatar(directory)
        except AvatarLoadError as exc:
            logger.warning("avatar %s is unreadable: %s", avatar_id, exc)
            raise AvatarNotFoundError(
                f"avatar {avatar_id!r} exists on disk but cannot be read; build it again"
            ) from exc
        backend: LipsyncBackend | None = None
        reason: str | None = None
        try:
            backend = self.engine.lipsync_backend(avatar.lipsync_type, avatar=avatar_id)
        except LipcoreError as exc:  # not installed, or its plugin is broken
            reason = str(exc)
        else:
            reason = backend.availability()
        if reason is not None:
            logger.info("avatar %s is listed as unusable: %s", avatar_id, reason)
        return AvatarRecord(avatar, version, backend, reason, stamp)

    def records(self, limit: int = 1000, *, ids: list[str] | None = None) -> list[AvatarRecord]:
        """The avatars on disk (or those of ``ids``), newest first; one that cannot be read is
        skipped with a log line (it never breaks the listing of the others)."""
        out = []
        for avatar_id in self.list_ids(limit) if ids is None else ids[:limit]:
            try:
                out.append(self.get(avatar_id))
            except LipcoreError as exc:
                logger.warning("avatar %s left out of the listing: %s", avatar_id, exc)
        return out

    def list_ids(self, limit: int = 1000) -> list[str]:
        """Ids of the complete avatars on disk (those with a manifest), newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            with contextlib.suppress(OSError):
                if is_avatar_id(d.name):
                    found.append((d.joinpath(MANIFEST_FILE).stat().st_mtime, d.name))
        found.sort(reverse=True)
        return [name for _, name in found[:limit]]

    async def build(
        self, data: bytes, *, backend: str | None = None, name: str | None = None
    ) -> AvatarRecord:
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
            # Fail fast on an unknown back end, before minutes of building; an alias
            # resolves to its kind before anything is written ("wav2lip" → "onnx").
            backend = self.engine.lipsync_kind(backend)
            # The photo is decoded under the build limit, inside the build worker: decoding
            # is the memory-hungry step, and a handful of parallel uploads must not each hold
            # a full-size image (docs/server.md, "Limits").
            async with self._sem:
                avatar_id = new_avatar_id()
                out_dir = self.root / avatar_id
                self.root.mkdir(parents=True, exist_ok=True)
                await self._run_build(data, out_dir, backend, avatar_id, name)
        finally:
            self._pending -= 1
        logger.info("avatar built", extra={"avatar_id": avatar_id, "backend": backend})
        return self.get(avatar_id)

    async def _run_build(self, data: bytes, out_dir: Path, backend: str, avatar_id: str,
                         name: str | None) -> None:
        """Build into ``out_dir``; with shared storage, then publish it there (last, so that
        it is listed only once complete). A failed publish leaves nothing behind."""
        await self._build_local(data, out_dir, backend, avatar_id, name)
        if self.storage is None:
            return
        try:
            await anyio.to_thread.run_sync(self.storage.publish, avatar_id, out_dir)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise

    async def _build_local(self, data: bytes, out_dir: Path, backend: str, avatar_id: str,
                           name: str | None) -> None:
        limits = {"max_bytes": self.settings.max_upload_bytes,
                  "max_pixels": self.settings.max_image_pixels,
                  "max_side": self.settings.max_image_side}
        job = functools.partial(_build_job, data, str(out_dir), backend, avatar_id, limits,
                                self.settings.idle_seconds, self.settings.idle_fps, name)
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
