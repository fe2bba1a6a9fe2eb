"""The pluggy entry point (``[project.entry-points.lipcore] elevenlabs = ...plugin``)."""

from __future__ import annotations

import lipcore
from lipcore.hookspecs import Register
from lipcore_tts_elevenlabs.source import ElevenLabsTTSSource


@lipcore.hookimpl
def register_tts_sources(register: Register) -> None:
    register("elevenlabs", ElevenLabsTTSSource, aliases=("11labs",))
