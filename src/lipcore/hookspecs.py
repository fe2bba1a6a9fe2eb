"""Every lipcore hook. Each hands the plugin a ``register`` callback; the core owns names,
aliases and clashes (see :mod:`lipcore.plugins`). Hooks hand over factories: pluggy is never on
the per-chunk or per-frame path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("lipcore")
hookimpl = pluggy.HookimplMarker("lipcore")


class Register(Protocol):
    """The callback each hook receives. ``factory`` is a class implementing the family's
    interface (checked when registering: a wrong one is a clear error naming the plugin) or a
    function returning an instance; ``aliases`` are other names for it."""

    def __call__(
        self, name: str, factory: Callable[..., Any], *, aliases: tuple[str, ...] = ()
    ) -> None: ...


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
    """Register lipsync back ends under their kind, the avatar manifest's ``type``
    (``"sprites"``, ``"mesh"``, ``"onnx"``, or any new name): a
    :class:`lipcore.interfaces.LipsyncBackend` subclass whose ``type`` is that name, or a
    function returning one. Aliases resolve to the kind before a manifest is written."""


@hookspec
def register_transports(register: Register) -> None:
    """Register client transports (factories of :class:`lipcore.interfaces.Transport`)."""


@hookspec
def register_audio_viseme_estimators(register: Register) -> None:
    """Register estimators of visemes from audio alone (factories of
    :class:`lipcore.interfaces.AudioVisemeEstimator`). The engine calls a factory with the
    keyword ``mapper`` (its :class:`lipcore.interfaces.VisemeMapper`, for estimators that map
    aligned phonemes); a factory that has no use for it accepts and ignores it."""
