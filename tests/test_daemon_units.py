"""Units of the drift daemon that need no Redis or Kafka: the quality feeds, the comparability of a window with
P_ref, the schedule's check jobs. Hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from compass.drift.stale import noise_share, share_beyond
from compass.languages import LanguagesConfig
from daemon.scheduler.quality import NO_QUALITY, DetectorFeed, finite_values, quality_feed
from daemon.scheduler.read import comparable, window_behind
from daemon.scheduler.run import CheckSchedule
from daemon.scheduler.state import StaticLanguages
from infra.reference import Reference
from infra.window import WindowSnapshot


class Queue:
    """A stand-in for the Redis client: ``lpop`` hands out what was queued, and counts its calls."""

    def __init__(self, *items: bytes | str):
        self.items = list(items)
        self.pops = 0

    def lpop(self, key: str, count: int) -> list[bytes | str] | None:
        self.pops += 1
        out, self.items = self.items[:count], self.items[count:]
        return out or None


@pytest.mark.parametrize(("items", "values", "bad"), [
    ([], [], 0),
    ([b"1.5", "2", "-0.25"], [1.5, 2.0, -0.25], 0),
    (["nan", "x", b"inf", "-inf", "3"], [3.0], 4),
    ([b"", b"1e3"], [1000.0], 1),
])
def test_finite_values(items, values, bad):
    assert finite_values(items) == (values, bad)


def test_no_quality_is_the_null_feed_and_reads_nothing():
    assert quality_feed("none") is NO_QUALITY and NO_QUALITY.kind == "none"
    q = Queue("1.0")
    assert NO_QUALITY.read(q, "k") == (None, 0)
    assert q.pops == 0 and q.items == ["1.0"]  # the values stay for a feed configured later


@pytest.mark.parametrize(("queued", "expected"), [
    ((), (None, 0)),  # no data yet
    (("0.5", "nan", "0.5"), (False, 1)),  # data, no change, one bad value
])
def test_detector_feed_reads(queued, expected):
    feed = quality_feed("adwin")
    assert isinstance(feed, DetectorFeed) and feed.kind == "adwin"
    assert feed.read(Queue(*queued), "k") == expected


def test_detector_feed_says_false_once_it_has_seen_data():
    feed, q = DetectorFeed("page_hinkley"), Queue("1", "1")
    assert feed.read(q, "k") == (False, 0)
    assert feed.read(q, "k") == (False, 0)  # nothing new, but values were seen: no change, not "no data"


def snap(version: str | None, n_buckets: int = 3) -> WindowSnapshot:
    return WindowSnapshot("sw", np.zeros(n_buckets, dtype=np.int64), 0, version, {})


REF = Reference("sw", [0.5, 0.5, 0.0], "v1", "a1", 0.0)


@pytest.mark.parametrize(("window", "expected"), [
    (snap(None), ""),  # no window yet: not a mismatch
    (snap("v1"), ""),
    (snap("v1.2"), ""),  # a revision of the reference's codebook keeps its cluster ids
    (snap("v2"), "window codebook 'v2' != reference codebook 'v1' (adapter 'a1'), another lineage"),
    (snap("v1", 4), "window has 4 buckets but P_ref has 3 for codebook 'v1'"),
])
def test_comparable(window, expected):
    why = comparable(REF, window)
    assert why.startswith(expected) and bool(why) == bool(expected)


OLD, NEW = "20261206T100000-000000-aaaaaa", "20261206T110000-000000-bbbbbb"  # versions sort by their UTC stamp


@pytest.mark.parametrize(("ref_version", "window", "behind"), [
    (NEW, snap(OLD), True),  # a re-fit switched the reference; the consumers still write the old lineage
    (NEW, snap(f"{OLD}.20261206T120000-000000-cccccc"), True),  # a later revision of the old lineage is still behind
    (OLD, snap(NEW), False),  # the window is ahead: a codebook published without references
    (OLD, snap(OLD), False),
    (NEW, snap(None), False),  # no window yet
])
def test_window_behind(ref_version, window, behind):
    assert window_behind(Reference("sw", [0.5, 0.5, 0.0], ref_version, "a1", 0.0), window) is behind
    assert window_behind(None, window) is False


@pytest.mark.parametrize(("counts", "noise"), [([3, 0, 1], 0.25), ([0, 0, 0], None), ([0, 2], 1.0)])
def test_noise_share(counts, noise):
    assert noise_share(counts) == noise


@pytest.mark.parametrize(("distances", "radius", "share"), [
    ([0.1, 0.5, 0.5, 0.9], 0.5, 0.25),  # strictly beyond
    ([], 0.5, None),
    ([2.0, 3.0], 1.0, 1.0),
])
def test_share_beyond(distances, radius, share):
    assert share_beyond(distances, radius) == share


class Scheduled:
    """What CheckSchedule drives, recording the leases it hands back."""

    def __init__(self, *enabled: str):
        self.languages = StaticLanguages(LanguagesConfig.model_validate({"languages": {c: {} for c in enabled}}))
        self.released: list[str] = []

    def check(self, lang: str, now: float | None = None) -> None: ...

    def check_unserved(self, now: float | None = None) -> None: ...

    def poll_events(self, timeout_ms: int = 200) -> int:
        return 0

    def reload(self) -> bool:
        return False

    def release(self, lang: str) -> None:
        self.released.append(lang)


def test_the_schedule_keeps_one_check_job_per_enabled_language():
    d = Scheduled("sw", "yo")
    schedule = CheckSchedule(d, check_interval_s=60.0, events_poll_s=1.0)  # not started: jobs stay pending
    schedule.sync_jobs()
    assert sorted(j.id for j in schedule.scheduler.get_jobs()) == ["check:sw", "check:yo"]
    d.languages.current = LanguagesConfig.model_validate({"languages": {"sw": {}, "ha": {}}})
    schedule.tick()
    assert sorted(j.id for j in schedule.scheduler.get_jobs()) == ["check:ha", "check:sw"]
    assert d.released == ["yo"]  # a language no longer checked hands its lease over at once
