"""Fixtures: one real mock server (127.0.0.1) per module, its behaviour reset per test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lipcore_tts_elevenlabs import ElevenLabsTTSSource
from lipcore_tts_elevenlabs.mock import MockConfig, MockElevenLabs

# The tests import their helpers as a top-level module (pytest runs with importlib mode).
sys.path.insert(0, str(Path(__file__).parent))

DE = "mock-de-anna"
EN = "mock-en-rachel"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def _mock_server() -> Iterator[MockElevenLabs]:
    with MockElevenLabs() as mock:
        yield mock


@pytest.fixture
def mock(_mock_server: MockElevenLabs, monkeypatch: pytest.MonkeyPatch) -> MockElevenLabs:
    _mock_server.config = MockConfig()
    _mock_server.records.clear()
    _mock_server.http_requests.clear()
    _mock_server.connections = 0
    _mock_server.handshakes.clear()
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("ELEVENLABS_BASE_URL", raising=False)
    return _mock_server


@pytest.fixture
async def make_source(mock: MockElevenLabs) -> AsyncIterator[Any]:
    made: list[ElevenLabsTTSSource] = []

    def make(**settings: Any) -> ElevenLabsTTSSource:
        settings.setdefault("api_key", mock.api_key)
        settings.setdefault("base_url", mock.base_url)
        settings.setdefault("first_audio_timeout_s", 5.0)
        settings.setdefault("chunk_timeout_s", 3.0)
        settings.setdefault("connect_timeout_s", 3.0)
        source = ElevenLabsTTSSource(**settings)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.aclose()
