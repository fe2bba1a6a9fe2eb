"""build_avatar / load_avatar end to end: a real photo → a directory that loads, atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipcore.avatar import landmarks as lmk
from lipcore.avatar.errors import AvatarLoadError, NoFaceError
from lipcore.avatar.face import FaceAnalyzer
from lipcore.avatar.store import Avatar, build_avatar, load_avatar
from lipcore.errors import InputError, PluginNotFoundError
from lipcore.interfaces import LipsyncBackend
from lipcore.media import probe
from lipcore.models import AtlasJson
from lipcore.testing import inline_plugin
from lipcore.testing import testing_engine as make_engine

SECONDS, FPS = 3.0, 25.0


class ProbeBackend(LipsyncBackend):
    """A small real back end for tests: writes every viseme's RGBA patch as one strip PNG."""

    type = "probe"

    def build_assets(self, mouth_model: Any, out_dir: Any) -> dict[str, Any]:
        from PIL import Image

        strip = np.concatenate([mouth_model.render({c: 1.0}) for c in mouth_model.classes], 1)
        Image.fromarray(strip, "RGBA").save(Path(out_dir) / "strip.png")
        return {"strip": "strip.png", "mask": "mask_mouth.png"}

    def open_renderer(self, avatar: Any) -> Any:
        raise NotImplementedError


def _sprites_installed() -> bool:
    from lipcore.plugins import PluginRegistry, get_plugin_manager

    return "sprites" in PluginRegistry(get_plugin_manager()).names("lipsync_backends")


@pytest.fixture(scope="module")
def engine() -> Any:
    probe = inline_plugin(lipsync_backends={"probe": ProbeBackend}, name="avatar-tests-probe")
    return make_engine(plugins=[probe])


@pytest.fixture(scope="module")
def backend() -> str:
    """The real sprites back end when installed; the probe back end otherwise."""
    return "sprites" if _sprites_installed() else "probe"


@pytest.fixture(scope="module")
def grace_avatar(
    tmp_path_factory: pytest.TempPathFactory,
    grace_hopper_path: Path,
    analyzer: FaceAnalyzer,
    engine: Any,
    backend: str,
) -> tuple[Avatar, list[tuple[str, float]]]:
    out = tmp_path_factory.mktemp("avatars") / "grace"
    events: list[tuple[str, float]] = []
    avatar = build_avatar(
        grace_hopper_path,
        out,
        backend=backend,
        seconds=SECONDS,
        fps=FPS,
        engine=engine,
        analyzer=analyzer,
        progress=lambda stage, f: events.append((stage, f)),
    )
    return avatar, events


def test_avatar_directory_is_complete(grace_avatar: tuple[Avatar, Any], backend: str) -> None:
    avatar, _ = grace_avatar
    m = avatar.manifest
    assert avatar.lipsync_type == backend and m.lipsync["type"] == backend
    assert m.avatar_id.startswith("av-") and avatar.id == m.avatar_id
    assert (m.photo.width, m.photo.height) == (512, 600)
    r = m.roi
    assert r.x >= 0 and r.x + r.w <= 512 and r.y >= 0 and r.y + r.h <= 600
    assert m.versions["face_model_sha256"].startswith("64184e22")
    assert {"lipcore", "mediapipe"} <= set(m.versions)
    for key, rel in m.lipsync.items():
        if key != "type":
            assert avatar.asset(str(rel)).is_file()
    assert avatar.asset("mask_mouth.png").is_file()
    if backend == "sprites":
        atlas = AtlasJson.model_validate_json(
            avatar.asset(str(m.lipsync["atlas_json"])).read_text()
        )
        assert len(atlas.classes) == 12 and atlas.roi == m.roi
    info = probe(avatar.asset(m.idle.file))
    assert (info.width, info.height) == (512, 600)
    assert info.frames == m.idle.frames == len(avatar.mouth_track.affines) == SECONDS * FPS
    assert info.fps == pytest.approx(FPS)
    # Written files only: no temp leftovers next to or inside the avatar.
    assert not [p for p in avatar.directory.parent.iterdir() if p.name.startswith(".")]
    assert not [p for p in avatar.directory.iterdir() if p.name.startswith(".")]


def test_load_round_trip(grace_avatar: tuple[Avatar, Any]) -> None:
    built, _ = grace_avatar
    avatar = load_avatar(built.directory)
    assert avatar.manifest == built.manifest and avatar.mouth_track == built.mouth_track
    photo = avatar.photo()
    assert photo.shape == (600, 512, 3) and photo.dtype == np.uint8
    frames = avatar.idle_frames()
    assert len(frames) == avatar.manifest.idle.frames and frames[0].shape == (600, 512, 3)
    assert avatar.idle_frames() is frames  # decoded once


def test_progress_reports_every_stage_in_order(grace_avatar: tuple[Avatar, Any]) -> None:
    avatar, events = grace_avatar
    stages = list(dict.fromkeys(s for s, _ in events))
    assert stages == ["load", "face", "mouth", "assets", "idle", "preview", "write"]
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert len(events) > 50  # the idle loop reports per frame
    assert set(avatar.build_seconds or {}) == set(stages)


def test_preview_and_measured_mouth_geometry(grace_avatar: tuple[Avatar, Any]) -> None:
    """The visemes, composited into the photo, re-detected by the landmarker (DESIGN's claims)."""
    from PIL import Image

    avatar, _ = grace_avatar
    preview = Image.open(avatar.asset(avatar.extra["preview"]))
    assert preview.width >= 1000 and preview.height >= 500
    checks = avatar.extra["checks"]
    ap, width = checks["viseme_aperture"], checks["viseme_width_ratio"]
    assert len(ap) == 12
    assert ap["Rest"] < 0.05 and ap["MBP"] < 0.05
    assert min(ap["AI"], ap["O"]) > ap["E"] + 0.05
    assert width["E"] > max(width["U"], width["WQ"])


def test_blink_is_in_the_loop(grace_avatar: tuple[Avatar, Any], analyzer: FaceAnalyzer) -> None:
    avatar, _ = grace_avatar
    blink = avatar.extra["checks"]["blink"]
    assert blink["frame"] in avatar.extra["idle_stats"]["blink_frames"]
    rest_ear = lmk.eye_aspect(analyzer.analyze(avatar.photo()).landmarks)
    assert blink["eye_aspect"] < 0.7 * rest_ear


def test_mouth_track_matches_redetected_landmarks(
    grace_avatar: tuple[Avatar, Any], analyzer: FaceAnalyzer
) -> None:
    """Mouth corners mapped by the track land where the landmarker finds them on idle frames."""
    avatar, _ = grace_avatar
    rest = analyzer.analyze(avatar.photo()).landmarks
    frames = avatar.idle_frames()
    errors = []
    for i in range(0, len(frames), 15):
        a, b, c, d, e, f = avatar.mouth_track.affines[i]
        found = analyzer.analyze(frames[i]).landmarks
        for k in lmk.MOUTH_CORNERS:
            x, y = rest[k, :2]
            errors.append(
                np.hypot(a * x + b * y + c - found[k, 0], d * x + e * y + f - found[k, 1])
            )
    # Landmarker jitter on re-encoded frames is itself ~0.3-0.5 px; the mean must be below 0.5.
    assert float(np.mean(errors)) < 0.5, errors


def test_existing_avatar_is_replaced_and_ids(
    tmp_path: Path, grace_hopper_path: Path, analyzer: FaceAnalyzer, engine: Any
) -> None:
    out = tmp_path / "a"
    first = build_avatar(
        grace_hopper_path, out, backend="probe", seconds=3.0, fps=20.0, engine=engine,
        analyzer=analyzer, avatar_id="grace-1",
    )  # fmt: skip
    assert first.id == "grace-1"
    second = build_avatar(
        grace_hopper_path,
        out,
        backend="probe",
        seconds=3.0,
        fps=20.0,
        engine=engine,
        analyzer=analyzer,
    )
    assert second.id != "grace-1" and load_avatar(out).id == second.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with pytest.raises(InputError, match="already exists"):
        build_avatar(grace_hopper_path, out, engine=engine, analyzer=analyzer, overwrite=False)
    with pytest.raises(InputError, match="not allowed"):
        build_avatar(grace_hopper_path, tmp_path / "b", avatar_id="../evil", engine=engine)


def test_failure_midway_leaves_nothing_and_keeps_old_avatar(
    tmp_path: Path,
    grace_hopper_path: Path,
    analyzer: FaceAnalyzer,
    engine: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lipcore.avatar.idle

    out = tmp_path / "avatar"
    old = build_avatar(
        grace_hopper_path, out, backend="probe", seconds=3.0, fps=20.0, engine=engine,
        analyzer=analyzer, avatar_id="old",
    )  # fmt: skip
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_idle(photo: Any, face: Any, out_path: Path, **kwargs: Any) -> Any:
        out_path.write_bytes(b"half a video")  # something half-written in the temp dir
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(lipcore.avatar.idle, "build_idle_loop", broken_idle)
    with pytest.raises(RuntimeError, match="simulated"):
        build_avatar(grace_hopper_path, out, backend="probe", engine=engine, analyzer=analyzer)
    assert load_avatar(out).id == old.id
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar"]  # temp dir removed

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        build_avatar(grace_hopper_path, fresh, backend="probe", engine=engine, analyzer=analyzer)
    assert not fresh.exists()
    with pytest.raises(AvatarLoadError, match="does not exist"):
        load_avatar(fresh)


def test_killed_build_never_loads(tmp_path: Path, grace_hopper_path: Path) -> None:
    """SIGKILL in the middle of the idle loop: no cleanup code runs, still no half avatar."""
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from lipcore.avatar.store import build_avatar
        from lipcore.testing import inline_plugin, testing_engine as make_engine
        from tests_probe import ProbeBackend
        plugin = inline_plugin(lipsync_backends={{"probe": ProbeBackend}}, name="probe")
        engine = make_engine(plugins=[plugin])
        def progress(stage, fraction):
            if stage == "idle" and fraction > 0.4:
                os.kill(os.getpid(), signal.SIGKILL)
        build_avatar({str(grace_hopper_path)!r}, {str(out)!r}, backend="probe", engine=engine,
                     seconds=3.0, fps=20.0, progress=progress)
        """
    )
    (tmp_path / "tests_probe.py").write_text(
        "from typing import Any\nfrom pathlib import Path\nimport numpy as np\n"
        "from lipcore.interfaces import LipsyncBackend\n"
        + textwrap.dedent(
            """
            class ProbeBackend(LipsyncBackend):
                type = "probe"
                def build_assets(self, mouth_model: Any, out_dir: Any) -> dict[str, Any]:
                    return {"mask": "mask_mouth.png"}
                def open_renderer(self, avatar: Any) -> Any:
                    raise NotImplementedError
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".killed.building-")]
    assert len(leftovers) == 1 and (leftovers[0] / "mask_mouth.png").is_file()
    with pytest.raises(AvatarLoadError, match=r"manifest\.json is missing"):
        load_avatar(leftovers[0])


def test_missing_backend_names_the_avatar(
    tmp_path: Path, grace_hopper_path: Path, analyzer: FaceAnalyzer, engine: Any
) -> None:
    with pytest.raises(PluginNotFoundError, match=r"av-[0-9a-f]{12}") as info:
        build_avatar(
            grace_hopper_path, tmp_path / "x", backend="nope", engine=engine, analyzer=analyzer
        )
    assert "nope" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_no_face_fails_before_any_work(tmp_path: Path, analyzer: FaceAnalyzer, engine: Any) -> None:
    from skimage import data

    with pytest.raises(NoFaceError, match="no face"):
        build_avatar(np.asarray(data.coffee()), tmp_path / "x", engine=engine, analyzer=analyzer)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path, grace_hopper_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("precious")
    with pytest.raises(InputError, match="not an avatar"):
        build_avatar(grace_hopper_path, tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "precious"


@pytest.fixture
def avatar_copy(grace_avatar: tuple[Avatar, Any], tmp_path: Path) -> Iterator[Path]:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(grace_avatar[0].directory, dst)
    yield dst


def test_load_avatar_errors(avatar_copy: Path, tmp_path: Path) -> None:
    manifest = avatar_copy / "manifest.json"
    data = json.loads(manifest.read_text())

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AvatarLoadError, match=r"manifest\.json is missing"):
        load_avatar(empty)

    manifest.write_text("{not json")
    with pytest.raises(AvatarLoadError, match="not a valid avatar manifest"):
        load_avatar(avatar_copy)

    manifest.write_text(json.dumps({**data, "idle": {**data["idle"], "file": "../../etc/passwd"}}))
    with pytest.raises(AvatarLoadError, match="outside the avatar directory"):
        load_avatar(avatar_copy)

    manifest.write_text(json.dumps(data))
    (avatar_copy / "idle.mp4").unlink()
    with pytest.raises(AvatarLoadError, match=r"idle\.mp4 is missing"):
        load_avatar(avatar_copy)


def test_mouth_track_must_match_the_loop(avatar_copy: Path) -> None:
    track = json.loads((avatar_copy / "mouth_track.json").read_text())
    track["affines"] = track["affines"][:-1]
    (avatar_copy / "mouth_track.json").write_text(json.dumps(track))
    with pytest.raises(AvatarLoadError, match="mouth track has"):
        load_avatar(avatar_copy)


def _installed(name: str) -> bool:
    from lipcore.plugins import PluginRegistry, get_plugin_manager

    return name in PluginRegistry(get_plugin_manager()).names("lipsync_backends")


@pytest.mark.skipif(not _installed("mesh"), reason="lipcore-meshwarp is not installed")
def test_astronaut_mesh_avatar(
    tmp_path: Path, astronaut_rgb: np.ndarray, analyzer: FaceAnalyzer
) -> None:
    """The smiling astronaut (teeth at rest) through the real mesh back end and the real engine."""
    from lipcore.models import MeshDef

    avatar = build_avatar(
        astronaut_rgb, tmp_path / "astronaut", backend="mesh", seconds=3.0, fps=20.0,
        analyzer=analyzer,
    )  # fmt: skip
    m = avatar.manifest
    assert avatar.lipsync_type == "mesh" and (m.photo.width, m.photo.height) == (512, 512)
    meshdef = MeshDef.model_validate_json(avatar.asset(str(m.lipsync["meshdef"])).read_text())
    assert meshdef.roi == m.roi and len(meshdef.targets) >= 11
    n_points = meshdef.grid.cols * meshdef.grid.rows
    assert all(len(t) == n_points for t in meshdef.targets.values())
    ap = avatar.extra["checks"]["viseme_aperture"]
    assert ap["Rest"] > 0.08  # the photo's own open smile is Rest
    assert ap["MBP"] < 0.05  # closed over the teeth
    assert min(ap["AI"], ap["O"]) > ap["E"] + 0.05
    assert load_avatar(avatar.directory).id == avatar.id
