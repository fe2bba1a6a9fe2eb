"""Avatars in S3-compatible object storage (``--avatar-storage s3://bucket/prefix``).

Layout under ``prefix``:

* ``avatars/<id>/<relative path>``: every file of the avatar, each with its modification time
  in the object's metadata (``x-amz-meta-mtime-ns``) so that every worker's cached copy has the
  same ``ETag``;
* ``published/<id>.json``: the avatar's manifest, written **last**. Listing reads only this
  prefix, and a fetch starts from it, so an avatar whose upload failed half-way is never
  listed nor served (its stray files are removed when the store can be reached, and are
  unreachable otherwise: ids are fresh random strings).

Endpoint and credentials come from boto3's usual sources (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role);
``LIPCORE_S3_ENDPOINT_URL`` overrides the endpoint for lipcore alone.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lipcore.server.storage import AvatarStorage, StorageError

__all__ = ["S3AvatarStorage"]

_TIMEOUTS = {"connect_timeout": 3, "read_timeout": 20}


class S3AvatarStorage(AvatarStorage):
    """:class:`lipcore.server.storage.AvatarStorage` on S3 (boto3). ``url``:
    ``s3://bucket[/prefix]``."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = os.environ.get("LIPCORE_S3_ENDPOINT_URL") or None
        self._local = threading.local()  # boto3 clients are not shared across threads

    # ------------------------------------------------------------------ helpers

    @property
    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            import boto3
            from botocore.config import Config

            # Few, short retries: a worker must answer "storage unreachable" in seconds, not
            # hang a build or a session creation for minutes.
            config = Config(retries={"max_attempts": 2, "mode": "standard"}, **_TIMEOUTS)
            c = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url,
                                               config=config)
            self._local.client = c
        return c

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _unreachable(self, what: str, exc: Exception, then: str = "retry later") -> StorageError:
        return StorageError(
            f"object storage s3://{self.bucket}/{self.prefix}: {what} failed "
            f"({type(exc).__name__}: {str(exc)[:160]}); {then}"
        )

    # ------------------------------------------------------------------ AvatarStorage

    def list_ids(self, limit: int = 1000) -> list[str]:
        found: list[tuple[Any, str]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key("published/"))
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"].rsplit("/", 1)[-1]
                    if name.endswith(".json"):
                        found.append((obj["LastModified"], name[:-5]))
        except Exception as exc:
            raise self._unreachable("listing", exc) from exc
        found.sort(reverse=True)
        return [avatar_id for _, avatar_id in found[:limit]]

    def publish(self, avatar_id: str, directory: Path) -> None:
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        manifest = directory / "manifest.json"
        if manifest not in files:
            raise StorageError(f"avatar {avatar_id!r} has no manifest.json to publish")
        written: list[str] = []
        try:
            for path in [*(p for p in files if p != manifest), manifest]:
                rel = path.relative_to(directory).as_posix()
                key = self._key("avatars", avatar_id, rel)
                mtime = str(path.stat().st_mtime_ns)
                with path.open("rb") as fh:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=fh,
                                           Metadata={"mtime-ns": mtime})
                written.append(key)
            # The one write that publishes: until it exists nothing lists or fetches the avatar.
            self.client.put_object(Bucket=self.bucket, Key=self._key("published",
                                                                    f"{avatar_id}.json"),
                                   Body=manifest.read_bytes(),
                                   ContentType="application/json")
        except Exception as exc:
            self._remove(written)
            raise self._unreachable(f"upload of avatar {avatar_id!r}", exc,
                                    "the avatar was not published (nothing of it is listed); "
                                    "build it again when the storage is back") from exc

    def _remove(self, keys: list[str]) -> None:
        """Best effort: the stray files of a failed publish (unreachable anyway)."""
        for start in range(0, len(keys), 1000):
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
            except Exception:
                return

    def download(self, avatar_id: str, directory: Path) -> bool:
        from botocore.exceptions import ClientError

        try:
            try:
                self.client.head_object(Bucket=self.bucket,
                                        Key=self._key("published", f"{avatar_id}.json"))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            base = self._key("avatars", avatar_id) + "/"
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(base):]
                    dest = (directory / rel).resolve()
                    if directory.resolve() not in dest.parents:
                        continue  # a key that would escape the avatar directory
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    resp = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])
                    with dest.open("wb") as fh:
                        for chunk in resp["Body"].iter_chunks(1 << 20):
                            fh.write(chunk)
                    mtime = resp.get("Metadata", {}).get("mtime-ns")
                    if mtime and mtime.isdigit():
                        os.utime(dest, ns=(int(mtime), int(mtime)))
        except Exception as exc:
            raise self._unreachable(f"download of avatar {avatar_id!r}", exc) from exc
        return True
