"""infra/codebook/ units without Redis: the pointer move's three outcomes (moved, a revision that lost, a fit that
sorts before the current lineage) against a scripted reply, and the version-string check."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from infra.codebook import CodebookError, CodebookVersionError, check_version
from infra.codebook.pointer import move_pointer

FIT = "20250101T120000-123456-a1b2c3"
REVISION = f"{FIT}.20250102T000000-000000-d4e5f6"
NEWER = "20260101T000000-000000-ffffff"


class Scripted:
    """Stands in for the registered pointer script: records its call and returns ``reply``."""

    def __init__(self, reply: list):
        self.reply = reply
        self.calls: list[tuple[list, list]] = []

    def __call__(self, keys: list, args: list) -> list:
        self.calls.append((keys, args))
        return self.reply


@pytest.mark.parametrize(
    "version, parent, reply, args",
    [
        (FIT, None, [1, b""], [FIT, FIT, ""]),  # first fit: no pointer before
        (NEWER, None, [1, FIT.encode()], [NEWER, NEWER, ""]),  # a later fit
        (REVISION, FIT, [1, FIT], [REVISION, FIT, FIT]),  # a revision replaces its parent; lineage is the fit
    ],
)
def test_a_move_sends_version_lineage_and_parent(version, parent, reply, args):
    script = Scripted(reply)
    move_pointer(script, "cp:codebook:current", Path("/cb"), version, parent)
    assert script.calls == [(["cp:codebook:current"], args)]


def test_a_revision_that_lost_is_logged_not_raised(caplog):
    script = Scripted([0, NEWER.encode()])
    with caplog.at_level(logging.WARNING, logger="infra.codebook"):
        move_pointer(script, "k", Path("/cb"), REVISION, FIT)
    [record] = caplog.records
    assert (record.version, record.parent, record.current) == (REVISION, FIT, NEWER)


def test_a_fit_older_than_the_current_lineage_raises():
    with pytest.raises(CodebookError, match=f"codebook {FIT} is stored in /cb/{FIT} but not made current: "
                                            f"the current version {NEWER} sorts after it"):
        move_pointer(Scripted([0, NEWER]), "k", Path("/cb"), FIT, None)


def test_offline_there_is_no_pointer_to_move():
    move_pointer(None, "k", Path("/cb"), FIT, None)  # no script, no Redis: nothing happens


@pytest.mark.parametrize("version", [FIT, REVISION, "v1", "a", "A.b-c_d"])
def test_well_formed_versions_pass(version):
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", ".hidden", "-x", "a/b", "a..b", "a b", None, 7, "x" * 129])
def test_malformed_versions_are_refused(version):
    with pytest.raises(CodebookVersionError, match="codebook version must be 1-128 of"):
        check_version(version)
