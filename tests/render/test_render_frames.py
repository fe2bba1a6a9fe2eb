"""The offline renderer's frame path: composited into a reused buffer and converted to I420
with only the overlay's rectangle re-converted, yet the same pixels as converting each
finished frame whole."""

from __future__ import annotations

import numpy as np
import pytest

from lipcore import media
from lipcore.avatar.store import Avatar
from lipcore.engine import Engine
from lipcore.render import _I420Frames, open_avatar_renderer

KINDS = ("sprites", "mesh")
SHAPES: list[dict[str, float] | None] = [
    None,
    {},
    {"AI": 1.0},
    {"MBP": 1.0},
    {"O": 0.6, "U": 0.3},
    None,
    {"E": 0.8},
]


@pytest.mark.parametrize("kind", KINDS)
def test_i420_frames_equal_whole_frame_conversion(
    avatars: dict[str, Avatar], engine: Engine, kind: str
) -> None:
    renderer = open_avatar_renderer(avatars[kind], engine=engine)
    idle = renderer.idle_frames
    assert all(f.shape[0] % 2 == 0 and f.shape[1] % 2 == 0 for f in idle[:1])
    yuv = _I420Frames(idle, in_flight=2)
    buffer = np.empty_like(idle[0])
    made = []
    for k, weights in enumerate(SHAPES * 2):
        expected = renderer.frame(k, weights)
        rgb = renderer.frame_into(k, weights, buffer)
        np.testing.assert_array_equal(rgb, expected)
        bare = rgb is idle[k % len(idle)]
        assert bare == (weights is None)
        got = yuv.frame(k % len(idle), None if bare else rgb)
        np.testing.assert_array_equal(got, media.rgb_to_i420(np.ascontiguousarray(expected)))
        if weights:
            # The mouth changed only a small part: the rest is the cached idle frame's.
            bare_i420 = media.rgb_to_i420(np.ascontiguousarray(idle[k % len(idle)]))
            assert 0 < np.count_nonzero(got != bare_i420) < 0.15 * got.size
        made.append(got)
    # Buffers are recycled in a ring longer than the writer's frames in flight.
    assert yuv.ring_size == 4 and len({id(a) for a in made}) <= 4 + len(idle)
