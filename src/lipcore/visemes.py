"""Moved to :mod:`lipcore.speech.visemes`; this name stays an alias of it (old imports keep
working)."""

import sys

from lipcore.speech import visemes as _moved

sys.modules[__name__] = _moved
