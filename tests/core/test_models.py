"""The pydantic contracts: the brief's examples validate, bad ones fail, and the published JSON
Schemas in docs/schema are current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lipcore import models

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def test_published_schemas_are_current() -> None:
    expected = models.schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}
    assert sorted(on_disk) == sorted(expected), "run: lipcore schema --out docs/schema"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale; run: lipcore schema --out docs/schema"


def test_brief_examples_validate() -> None:
    roi = {"x": 620, "y": 830, "w": 360, "h": 220}
    models.AvatarizeResponse.model_validate(
        {
            "avatar_id": "a1",
            "idle_url": "/avatars/a1/idle.mp4",
            "lipsync_assets": {
                "type": "sprites",
                "atlas_url": "/avatars/a1/atlas.png",
                "mask_url": "/avatars/a1/mask_mouth.png",
                "roi": roi,
            },
        }
    )
    models.VisemeEvent.model_validate(
        json.loads('{ "type": "viseme", "pts_ms": 123456, "weights": {"MBP":0.8,"O":0.2} }')
    )
    models.SessionCreate.model_validate({"avatar_id": "a1", "voice_id": "de"})
    models.SpeakRequest.model_validate({"text": "Hallo", "barge_in": True})
    atlas = models.AtlasJson.model_validate(
        {
            "grid": {"cols": 4, "rows": 4},
            "classes": ["Rest", "AI"],
            "mask": "mask_mouth.png",
            "roi": roi,
        }
    )
    assert atlas.grid.cols == 4
    mesh = models.MeshDef.model_validate(
        {"grid": {"cols": 16, "rows": 12}, "roi": roi, "targets": {"AI": [[0.0, 1.5]] * 192}}
    )
    assert mesh.targets["AI"][0] == (0.0, 1.5)


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (models.ROI, {"x": -1, "y": 0, "w": 10, "h": 10}),
        (models.ROI, {"x": 0, "y": 0, "w": 0, "h": 10}),
        (models.SpeakRequest, {"text": "hi", "unknown": 1}),
        (models.VisemeEvent, {"type": "audio", "pts_ms": 0, "weights": {}}),
        (
            models.LipsyncAssets,
            {"type": "3d", "mask_url": "m", "roi": {"x": 0, "y": 0, "w": 1, "h": 1}},
        ),
    ],
)
def test_bad_payloads_are_rejected(model: type, payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(payload)


def test_a_plugin_kind_validates_with_its_own_asset_urls() -> None:
    """The kind is an open name: the FlatBackend of docs/plugins.md builds avatars the server
    can return (it failed as a closed Literal of three names)."""
    assets = models.LipsyncAssets.model_validate(
        {"type": "flat", "mask_url": "m", "roi": {"x": 0, "y": 0, "w": 1, "h": 1},
         "flat_url": "/avatars/a/v/1/files/flat.json"}
    )
    assert assets.type == "flat"
    assert (assets.model_extra or {})["flat_url"].endswith("flat.json")
    with pytest.raises(ValidationError):  # still a name, not anything
        models.LipsyncAssets.model_validate(
            {"type": "Not A Kind!", "mask_url": "m", "roi": {"x": 0, "y": 0, "w": 1, "h": 1}}
        )
