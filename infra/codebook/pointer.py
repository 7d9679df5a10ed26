"""The Redis pointer naming the current codebook version (``{prefix}:codebook:current``) and its one atomic move:
forward only, so a new fit must sort after the current lineage and a revision only replaces its parent."""

from __future__ import annotations

import logging
from pathlib import Path

from redis.commands.core import Script

from compass.cluster.codebook import CodebookError, lineage_of
from infra.window.lua import LUA_OLDER
from infra.window.replies import text

log = logging.getLogger("infra.codebook")  # the package's logger, as before the split

# KEYS: pointer. ARGV: new version, new lineage, expected parent ('' = a new fit).
# Returns {1, previous} when set, {0, current} when refused.
POINTER_LUA = LUA_OLDER + r"""
local cur = redis.call('GET', KEYS[1])
if ARGV[3] ~= '' then
  if cur ~= ARGV[3] then return {0, cur or ''} end
elseif cur and not older(string.match(cur, '^[^.]+'), ARGV[2]) then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, cur or ''}
"""


def move_pointer(script: Script | None, key: str, root: Path, version: str, parent: str | None) -> None:
    """Make ``version`` current with the registered ``POINTER_LUA`` ``script`` (None: offline, nothing to move).

    ``parent``: the version a revision replaces (None: a new fit). A revision that lost to a newer fit is only
    logged; a new fit that sorts before the current lineage raises ``CodebookError`` (it is stored under
    ``root`` either way)."""
    if script is None:
        return
    done, other = script(keys=[key], args=[version, lineage_of(version), parent or ""])
    other = text(other)
    if int(done):
        return
    if parent is not None:
        # A newer codebook became current while this revision was computed: the newer one wins.
        log.warning(
            "codebook revision stored but not made current: the pointer moved from its parent meanwhile",
            extra={"version": version, "parent": parent, "current": other},
        )
        return
    raise CodebookError(
        f"codebook {version} is stored in {root / version} but not made current: the current version "
        f"{other} sorts after it (versions are UTC times; check this host's clock), and windows never go "
        "back to an older lineage"
    )
