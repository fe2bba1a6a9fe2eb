"""Moved to :mod:`lipcore.speech.coarticulation`; this name stays an alias of it (old imports keep
working)."""

import sys

from lipcore.speech import coarticulation as _moved

sys.modules[__name__] = _moved
