"""Moved to :mod:`lipcore.speech.audio_visemes`; this name stays an alias of it (old imports keep
working)."""

import sys

from lipcore.speech import audio_visemes as _moved

sys.modules[__name__] = _moved
