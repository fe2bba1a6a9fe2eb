"""Where avatars live beyond one machine: the avatar-storage seam (``docs/deploy.md``).

By default an avatar lives in ``<data_dir>/avatars/<id>/`` and nothing here is used. With
``ServerSettings.avatar_storage`` set to a URL (``s3://bucket/prefix``), the store named by the
URL's scheme, found through the ``lipcore.avatar_storage`` entry-point group (the
``lipcore-storage-s3`` distribution provides ``s3``), holds the avatars every worker shares,
and each worker's ``<data_dir>/avatars`` becomes its local cache:

* a build is written to the local directory first, then **published**: every file uploaded,
  the manifest last, and an avatar is listed and served only once its manifest is there (so a
  build that failed half-way is never listed; :class:`AvatarStorage.publish`);
* an avatar not in the cache is **fetched** whole into a temporary directory that is then
  renamed into place, so a cache entry is complete or absent; its files get the stored
  modification times, so every worker answers with the same ``ETag`` for the same asset.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

from lipcore.errors import LipcoreError

__all__ = ["AvatarStorage", "StorageError", "fetch_into_cache", "open_storage"]

logger = logging.getLogger("lipcore.server.storage")

ENTRY_POINT_GROUP = "lipcore.avatar_storage"


class StorageError(LipcoreError):
    """The avatar storage cannot be reached or refused the operation (503: retry later)."""

    code = "storage_unavailable"
    http_status = 503


class AvatarStorage(ABC):
    """Avatars shared by every worker. Implementations are made from the storage URL
    (``cls(url)``) and raise :class:`StorageError` with a clear message when the store cannot
    be reached; they are called from worker threads."""

    @abstractmethod
    def list_ids(self, limit: int = 1000) -> list[str]:
        """Ids of the published avatars (manifest written), newest first."""

    @abstractmethod
    def publish(self, avatar_id: str, directory: Path) -> None:
        """Upload every file of ``directory`` as avatar ``avatar_id``, ``manifest.json`` last
        (the avatar is published when that succeeds). On failure remove what was written
        (best effort: the store may be unreachable) and raise :class:`StorageError`; what may
        remain is never listed nor served."""

    @abstractmethod
    def download(self, avatar_id: str, directory: Path) -> bool:
        """Write the published avatar's files into the empty ``directory`` (each with its
        stored modification time); ``False`` if no such avatar is published."""


def open_storage(url: str | None) -> AvatarStorage | None:
    """The storage for ``url`` (``None`` for none: the data directory alone)."""
    if not url:
        return None
    scheme = urlparse(url).scheme
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
    if not found:
        names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise LipcoreError(
            f"no avatar storage for {scheme!r} URLs (installed: {names or 'none'}); "
            "for s3:// install the lipcore-storage-s3 distribution (plugins/storage_s3)"
        )
    cls = found[0].load()
    storage: AvatarStorage = cls(url)
    return storage


def fetch_into_cache(storage: AvatarStorage, root: Path, avatar_id: str) -> bool:
    """Make ``root/avatar_id`` a complete copy of the published avatar: download into a
    temporary directory beside it and rename it into place (atomic on one file system; a
    concurrent fetch of the same avatar simply wins). ``False`` if it is not published."""
    final = root / avatar_id
    if (final / "manifest.json").is_file():
        return True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{avatar_id}-", dir=root))
    try:
        if not storage.download(avatar_id, tmp):
            return False
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():  # not a concurrent fetch that won
                raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
