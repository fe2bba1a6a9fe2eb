"""Model resolution and download, against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lipcore.avatar import modelfetch
from lipcore.avatar.errors import FaceModelError
from lipcore.avatar.modelfetch import (
    FACE_MODEL_PATH,
    FACE_MODEL_SHA256,
    download_face_model,
    file_sha256,
    resolve_face_model,
)


@dataclass
class ModelServer:
    base_url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def publish(self, data: bytes) -> None:
        target = self.root / FACE_MODEL_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[ModelServer]:
    root = tmp_path / "www"
    root.mkdir()
    server_state = ModelServer(base_url="", root=root)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No explicit model, an empty cache: resolution must go to the (local) network."""
    monkeypatch.delenv("LIPCORE_FACE_MODEL", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIPCORE_CACHE_DIR", str(cache))
    return cache


def test_shared_model_has_the_pinned_hash(face_model_path: Path) -> None:
    assert file_sha256(face_model_path) == FACE_MODEL_SHA256


def test_downloads_verifies_and_caches(
    model_server: ModelServer,
    clean_env: Path,
    face_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_server.publish(face_model_path.read_bytes())
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", model_server.base_url)
    path = resolve_face_model()
    assert path == clean_env / "models" / "face_landmarker.task"
    assert file_sha256(path) == FACE_MODEL_SHA256
    assert model_server.requests == [f"/{FACE_MODEL_PATH}"]
    assert [p.name for p in path.parent.iterdir()] == ["face_landmarker.task"]  # no .part left

    # A valid cache is used as is: no second request.
    assert resolve_face_model() == path
    assert len(model_server.requests) == 1


def test_truncated_download_is_refused_and_not_cached(
    model_server: ModelServer,
    clean_env: Path,
    face_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_server.publish(face_model_path.read_bytes()[:100_000])
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", model_server.base_url)
    with pytest.raises(FaceModelError, match="SHA-256") as info:
        resolve_face_model()
    assert FACE_MODEL_SHA256 in str(info.value) and "LIPCORE_FACE_MODEL" in str(info.value)
    models = clean_env / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_wrong_expected_hash_is_refused(
    model_server: ModelServer, tmp_path: Path, face_model_path: Path
) -> None:
    model_server.publish(face_model_path.read_bytes())
    dest = tmp_path / "m" / "face_landmarker.task"
    url = f"{model_server.base_url}/{FACE_MODEL_PATH}"
    with pytest.raises(FaceModelError, match="expected 0000"):
        download_face_model(dest, url=url, sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_server_down_gives_clear_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(FaceModelError, match="could not download") as info:
        resolve_face_model()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "LIPCORE_FACE_MODEL" in str(info.value)


def test_missing_file_on_server(
    model_server: ModelServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", model_server.base_url)
    with pytest.raises(FaceModelError, match="404"):
        resolve_face_model()


def test_damaged_cache_is_replaced(
    model_server: ModelServer,
    clean_env: Path,
    face_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = clean_env / "models" / "face_landmarker.task"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a model")
    model_server.publish(face_model_path.read_bytes())
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", model_server.base_url)
    assert resolve_face_model() == cached
    assert file_sha256(cached) == FACE_MODEL_SHA256
    assert len(model_server.requests) == 1


def test_explicit_path_then_env_then_cache(
    clean_env: Path, face_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "mine.task"
    shutil.copy(face_model_path, copy)
    monkeypatch.setenv("LIPCORE_FACE_MODEL", str(face_model_path))
    assert resolve_face_model(copy) == copy  # explicit wins over the environment
    assert resolve_face_model() == face_model_path
    monkeypatch.setenv("LIPCORE_FACE_MODEL", str(tmp_path / "missing.task"))
    with pytest.raises(FaceModelError, match=r"missing\.task.*LIPCORE_FACE_MODEL"):
        resolve_face_model()
    with pytest.raises(FaceModelError, match="explicit path"):
        resolve_face_model(tmp_path / "nope.task")


def test_cache_dir_defaults_to_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIPCORE_CACHE_DIR", raising=False)
    assert "lipcore" in str(modelfetch.cache_dir()).lower()


def test_install_from_a_local_copy_then_resolve_offline(
    face_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIPCORE_FACE_MODEL", raising=False)
    monkeypatch.setenv("LIPCORE_CACHE_DIR", str(tmp_path / "cache"))
    # No network: a base URL nobody listens on; resolution must not need it after install.
    monkeypatch.setenv("LIPCORE_MODEL_BASE_URL", "http://127.0.0.1:9")
    installed = modelfetch.install_face_model(face_model_path)
    assert installed == tmp_path / "cache" / "models" / "face_landmarker.task"
    assert file_sha256(installed) == FACE_MODEL_SHA256
    assert resolve_face_model() == installed


def test_install_refuses_a_wrong_file_and_leaves_the_cache_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIPCORE_CACHE_DIR", str(tmp_path / "cache"))
    bogus = tmp_path / "face_landmarker.task"
    bogus.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        modelfetch.install_face_model(bogus)
    with pytest.raises(FaceModelError, match="no model file"):
        modelfetch.install_face_model(tmp_path / "missing.task")
    assert not (tmp_path / "cache" / "models" / "face_landmarker.task").exists()


def test_cli_models_fetch_from_a_local_copy(
    face_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lipcore.cli import app

    monkeypatch.delenv("LIPCORE_FACE_MODEL", raising=False)
    monkeypatch.setenv("LIPCORE_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["models", "fetch", "--from", str(face_model_path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("face_landmarker.task")
    bad = CliRunner().invoke(app, ["models", "fetch", "--from", str(tmp_path / "nope.task")])
    assert bad.exit_code == 2 and "no model file" in bad.output
