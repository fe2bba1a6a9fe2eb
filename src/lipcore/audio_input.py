"""Moved to :mod:`lipcore.speech.audio_input`; this name stays an alias of it (old imports keep
working)."""

import sys

from lipcore.speech import audio_input as _moved

sys.modules[__name__] = _moved
