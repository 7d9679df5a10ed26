"""Per-language monitor windows in Redis (W_recent of eq. 4): the store (store.py), its Lua scripts (lua.py), its
values (types.py) and errors (errors.py). The names below are the package's public face; import them from here."""

from compass.cluster.codebook import lineage_of
from infra.window.errors import StaleCodebookError, WindowInputError, WindowStateError
from infra.window.lua import LUA_OLDER
from infra.window.store import KINDS, QUALITY_MAX, WindowStore
from infra.window.types import MAX_OFFSET, VERSION_RE, ApplyResult, Assignment, WindowSnapshot

__all__ = [
    "KINDS",
    "LUA_OLDER",
    "MAX_OFFSET",
    "QUALITY_MAX",
    "VERSION_RE",
    "ApplyResult",
    "Assignment",
    "StaleCodebookError",
    "WindowInputError",
    "WindowSnapshot",
    "WindowStateError",
    "WindowStore",
    "lineage_of",
]
