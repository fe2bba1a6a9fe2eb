"""Every lipcore hook. Each hands the plugin a ``register`` callback; the core owns names,
aliases and clashes (see :mod:`lipcore.plugins`). Hooks hand over factories: pluggy is never on
the per-chunk or per-frame path."""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("lipcore")
hookimpl = pluggy.HookimplMarker("lipcore")


class Register(Protocol):
    def __call__(self, name: str, factory: Any, *, aliases: tuple[str, ...] = ()) -> None: ...


@hookspec
def register_tts_sources(register: Register) -> None:
    """Register text-to-speech sources: ``register("espeak", EspeakSource)``; the factory
    takes keyword settings and returns a :class:`lipcore.interfaces.TTSSource`."""


@hookspec
def register_viseme_mappers(register: Register) -> None:
    """Register phoneme/character → viseme mappers (factories of
    :class:`lipcore.interfaces.VisemeMapper`)."""


@hookspec
def register_lipsync_backends(register: Register) -> None:
    """Register lipsync back ends under the avatar manifest's type name (``"sprites"``,
    ``"mesh"``, ``"onnx"``); factories of :class:`lipcore.interfaces.LipsyncBackend`."""


@hookspec
def register_transports(register: Register) -> None:
    """Register client transports (factories of :class:`lipcore.interfaces.Transport`)."""


@hookspec
def register_audio_viseme_estimators(register: Register) -> None:
    """Register estimators of visemes from audio alone (factories of
    :class:`lipcore.interfaces.AudioVisemeEstimator`). The engine calls a factory with the
    keyword ``mapper`` (its :class:`lipcore.interfaces.VisemeMapper`, for estimators that map
    aligned phonemes); a factory that has no use for it accepts and ignores it."""
