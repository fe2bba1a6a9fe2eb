"""Find (or fetch once) the MediaPipe face landmarker bundle.

Resolution order: an explicit path → ``$LIPCORE_FACE_MODEL`` → the user cache directory
(``$LIPCORE_CACHE_DIR``, else the platform's cache dir for "lipcore") → a download from the
official MediaPipe model URL into that cache. A download is checked against a pinned SHA-256
and written atomically (temporary file + rename), so a failed or interrupted download never
leaves a file that later passes for the model. ``$LIPCORE_MODEL_BASE_URL`` replaces the URL's
base (a mirror, or a local server in tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from lipcore.avatar.errors import FaceModelError

__all__ = [
    "FACE_MODEL_FILE",
    "FACE_MODEL_SHA256",
    "FACE_MODEL_URL",
    "cache_dir",
    "download_face_model",
    "face_model_url",
    "file_sha256",
    "install_face_model",
    "resolve_face_model",
]

log = logging.getLogger(__name__)

FACE_MODEL_FILE = "face_landmarker.task"
FACE_MODEL_BASE_URL = "https://storage.googleapis.com/mediapipe-models"
FACE_MODEL_PATH = "face_landmarker/face_landmarker/float16/1/face_landmarker.task"
FACE_MODEL_URL = f"{FACE_MODEL_BASE_URL}/{FACE_MODEL_PATH}"
FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
# The real bundle is ~3.6 MB; anything far larger is not it (and must not fill the disk).
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """lipcore's cache directory: ``$LIPCORE_CACHE_DIR`` or the platform's user cache dir."""
    env = os.environ.get("LIPCORE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lipcore", appauthor=False))


def face_model_url() -> str:
    """The download URL, honouring ``$LIPCORE_MODEL_BASE_URL``."""
    base = os.environ.get("LIPCORE_MODEL_BASE_URL", FACE_MODEL_BASE_URL).rstrip("/")
    return f"{base}/{FACE_MODEL_PATH}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_explicit(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise FaceModelError(
            f"face landmarker model not found at {path} (from {origin}); point it at a "
            f"'{FACE_MODEL_FILE}' file, or unset it to use the cache/download"
        )
    return path


def download_face_model(
    dest: Path, *, url: str | None = None, sha256: str = FACE_MODEL_SHA256
) -> Path:
    """Download the model to ``dest`` atomically and verify its SHA-256.

    Raises :class:`FaceModelError` on a network failure, an oversize body or a hash mismatch;
    ``dest`` is then left untouched.
    """
    url = url or face_model_url()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        log.info("downloading face landmarker model from %s", url)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
                total = 0
                while block := r.read(1 << 16):
                    total += len(block)
                    if total > _MAX_DOWNLOAD_BYTES:
                        raise FaceModelError(
                            f"download from {url} exceeds {_MAX_DOWNLOAD_BYTES} bytes; this is "
                            f"not the face landmarker model. Check $LIPCORE_MODEL_BASE_URL"
                        )
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise FaceModelError(
                f"could not download the face landmarker model from {url}: {exc}. Check the "
                f"network, or download it yourself and set LIPCORE_FACE_MODEL=/path/to/"
                f"{FACE_MODEL_FILE}"
            ) from exc
        got = digest.hexdigest()
        if got != sha256:
            raise FaceModelError(
                f"the file downloaded from {url} has SHA-256 {got}, expected {sha256} "
                f"(truncated or tampered download); nothing was saved. Try again, or set "
                f"LIPCORE_FACE_MODEL to a verified copy"
            )
        os.replace(tmp, dest)  # atomic on one filesystem: readers see no file or the whole file
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def resolve_face_model(path: str | Path | None = None) -> Path:
    """Return the path of a usable face landmarker bundle, downloading it once if needed.

    A cached file is only trusted if its SHA-256 matches; a damaged cache entry is replaced.
    """
    if path is not None:
        return _check_explicit(Path(path).expanduser(), "the explicit path")
    env = os.environ.get("LIPCORE_FACE_MODEL")
    if env:
        return _check_explicit(Path(env).expanduser(), "$LIPCORE_FACE_MODEL")
    cached = cache_dir() / "models" / FACE_MODEL_FILE
    if cached.is_file():
        if file_sha256(cached) == FACE_MODEL_SHA256:
            return cached
        log.warning("cached face model %s fails its SHA-256 check; downloading it again", cached)
    return download_face_model(cached)


def install_face_model(source: str | Path, *, sha256: str = FACE_MODEL_SHA256) -> Path:
    """Put a local copy of the model (an offline machine, a verified mirror) into the cache.

    The copy is checked against the same pinned SHA-256 as a download and written atomically;
    a file that fails the check raises :class:`FaceModelError` and the cache is left untouched.
    Returns the cached path, which :func:`resolve_face_model` then uses without any network.
    """
    src = Path(source).expanduser()
    if not src.is_file():
        raise FaceModelError(f"no model file at {src}: give the path of a '{FACE_MODEL_FILE}'")
    got = file_sha256(src)
    if got != sha256:
        raise FaceModelError(
            f"{src} has SHA-256 {got}, expected {sha256}: it is not the face landmarker bundle "
            f"lipcore pins (or it is damaged); nothing was installed"
        )
    dest = cache_dir() / "models" / FACE_MODEL_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as fh:
            while block := fh.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
