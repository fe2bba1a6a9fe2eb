"""The server's avatars: one broken or unknown avatar never breaks the others, aliases are
written as their kind, one id rule, and an avatar rebuilt on disk is picked up (issue 12)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import FAKE_AVATAR_ID, RunningServer, write_fake_avatar


def _manifest(d: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((d / "manifest.json").read_text())
    return data


def _write_manifest(d: Path, data: dict[str, object]) -> None:
    (d / "manifest.json").write_text(json.dumps(data))


def test_broken_and_unknown_avatars_leave_the_listing_working(
    make_server: Callable[..., RunningServer], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    write_fake_avatar(data)
    broken = write_fake_avatar(data, "a_broken_manifest")
    (broken / "manifest.json").write_text('{"avatar_id": "a_broken_manifest", "lipsync": ')
    unknown = write_fake_avatar(data, "a_unknown_kind")
    m = _manifest(unknown)
    m["lipsync"] = {"type": "hologram", "atlas_json": "atlas.json"}
    _write_manifest(unknown, m)
    srv = make_server(data_dir=data)
    with httpx.Client() as c:
        r = c.get(f"{srv.url}/avatars")
        assert r.status_code == 200, r.text
        listed = {a["avatar_id"]: a for a in r.json()["avatars"]}
        assert "a_broken_manifest" not in listed  # skipped, with a log line
        assert listed[FAKE_AVATAR_ID]["usable"] is True
        assert listed[FAKE_AVATAR_ID]["reason"] is None
        entry = listed["a_unknown_kind"]
        assert entry["usable"] is False
        assert "'hologram'" in entry["reason"]
        # The core's files only: no guessing of the unknown back end's entries.
        assert entry["lipsync_assets"]["type"] == "hologram"
        assert "atlas_json" not in entry["lipsync_assets"]["files"]
        assert entry["lipsync_assets"]["atlas_url"] is None
        assert entry["idle_url"].endswith("/idle.mp4")
        assert c.get(entry["idle_url"]).status_code == 200
        # Each one alone: the broken one is a clear 404, the unknown one is described.
        r = c.get(f"{srv.url}/avatars/a_broken_manifest")
        assert r.status_code == 404 and "cannot be read" in r.json()["detail"]
        assert c.get(f"{srv.url}/avatars/a_unknown_kind").json()["usable"] is False
        # A session on the unusable avatar is refused with its reason; the good one works.
        r = c.post(f"{srv.url}/session-2d", json={"avatar_id": "a_unknown_kind",
                                                  "voice_id": "test"})
        assert r.status_code == 409 and "hologram" in r.json()["detail"]
        r = c.post(f"{srv.url}/session-2d", json={"avatar_id": FAKE_AVATAR_ID,
                                                  "voice_id": "test"})
        assert r.status_code == 200, r.text
    assert "a_broken_manifest" in caplog.text


def test_an_unavailable_back_end_lists_its_avatars_as_unusable(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lipcore_sprites.backend import SpritesBackend

    monkeypatch.setattr(SpritesBackend, "availability",
                        lambda self: "the sprite painter is on holiday")
    srv = make_server()
    with httpx.Client() as c:
        entry = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}").json()
        assert entry["usable"] is False
        assert entry["reason"] == "the sprite painter is on holiday"


def test_one_id_rule_an_id_with_a_dot_is_served(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    write_fake_avatar(data, "my.avatar")
    srv = make_server(data_dir=data)
    with httpx.Client() as c:
        assert c.get(f"{srv.url}/avatars/my.avatar").status_code == 200
        ids = [a["avatar_id"] for a in c.get(f"{srv.url}/avatars").json()["avatars"]]
        assert "my.avatar" in ids
        # 65 characters: refused by the builder, so never served either
        assert c.get(f"{srv.url}/avatars/{'a' * 65}").status_code == 404


def test_an_avatar_rebuilt_on_disk_is_picked_up(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    srv = make_server(data_dir=tmp_path / "data")
    d = tmp_path / "data" / "avatars" / FAKE_AVATAR_ID
    with httpx.Client() as c:
        before = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}").json()
        old_url = before["lipsync_assets"]["atlas_url"]
        r = c.get(old_url)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        # Rebuild it elsewhere and swap it in, the way build_avatar does.
        staging = tmp_path / "staging"
        write_fake_avatar(staging, FAKE_AVATAR_ID)
        new = staging / "avatars" / FAKE_AVATAR_ID
        m = _manifest(new)
        m["roi"] = {"x": 40, "y": 50, "w": 36, "h": 22}
        m["created_at"] = "2026-12-01T10:00:00Z"
        _write_manifest(new, m)
        shutil.rmtree(d)
        shutil.move(str(new), str(d))
        after = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}").json()
        assert after["created_at"] == "2026-12-01T10:00:00Z"
        assert after["lipsync_assets"]["roi"]["x"] == 40
        assert after["lipsync_assets"]["atlas_url"] != old_url
        # The old URL no longer claims to be immutable; the new one does.
        r = c.get(old_url)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
        r = c.get(after["lipsync_assets"]["atlas_url"])
        assert "immutable" in r.headers["cache-control"]


def test_wav2lip_alias_upload_is_written_as_onnx(
    make_server: Callable[..., RunningServer], grace_hopper_path: Path, face_model_path: Path,
) -> None:
    """The documented alias used to be written into the manifest: the upload answered 500 and
    from then on GET /avatars answered 500 for everyone."""
    pytest.importorskip("lipcore_wav2lip")
    srv = make_server(idle_seconds=3.0)
    with httpx.Client(timeout=300) as c:
        r = c.post(f"{srv.url}/avatarize-2d", data={"backend": "wav2lip"},
                   files={"hero_image": ("hopper.jpg", grace_hopper_path.read_bytes())})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["lipsync_assets"]["type"] == "onnx"
        assert body["lipsync_assets"]["mask_url"].endswith("/mask_mouth.png")
        # The reference face is a file clients may show, not a model they would run.
        assert body["lipsync_assets"].get("model_url") is None
        assert body["lipsync_assets"]["files"]["reference"].endswith("/wav2lip_ref.png")
        # declared client assets only: the server-side wav2lip.json is not handed out
        assert "wav2lip" not in body["lipsync_assets"]["files"]
        d = Path(srv.app.state.lipcore.avatars.root) / body["avatar_id"]
        assert _manifest(d)["lipsync"]["type"] == "onnx"  # type: ignore[index]
        r = c.get(f"{srv.url}/avatars")
        assert r.status_code == 200
        assert body["avatar_id"] in [a["avatar_id"] for a in r.json()["avatars"]]


def test_plugin_static_files_are_served_inside_their_folder_only(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    from lipcore.interfaces import LipsyncBackend
    from lipcore.testing import ReplayTTSSource, inline_plugin, testing_engine

    static = tmp_path / "static"
    static.mkdir()
    (static / "draw.js").write_text("export default {};\n")
    (tmp_path / "secret.txt").write_text("not for clients")

    class Shipping(LipsyncBackend):
        type = "shipping"
        web_renderer = "draw.js"

        def static_dir(self) -> Path:
            return static

        def build_assets(self, mouth_model: object, out_dir: Path) -> dict[str, object]:
            return {}

        def open_renderer(self, avatar: object) -> object:
            raise NotImplementedError

    engine = testing_engine(plugins=[inline_plugin(lipsync_backends={"shipping": Shipping},
                                                   name="shipping-test")],
                            tts={"replay": ReplayTTSSource()})
    srv = make_server(engine=engine)
    with httpx.Client() as c:
        r = c.get(f"{srv.url}/plugins/shipping/static/draw.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        for bad in ("..%2Fsecret.txt", "%2E%2E/secret.txt", "nope.js"):
            assert c.get(f"{srv.url}/plugins/shipping/static/{bad}").status_code == 404, bad
        assert c.get(f"{srv.url}/plugins/sprites/static/x.js").status_code == 404  # none
        assert c.get(f"{srv.url}/plugins/hologram/static/x.js").status_code == 404
