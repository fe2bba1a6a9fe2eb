"""Moved to :mod:`lipcore.avatar.idle`; this name stays an alias of it (old imports keep
working)."""

import sys

from lipcore.avatar import idle as _moved

sys.modules[__name__] = _moved
