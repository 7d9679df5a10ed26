"""The per-language lease on the real Redis: one holder at a time, fencing refuses a stale holder."""

from __future__ import annotations

import time

import pytest

from infra.lock import LanguageLease


def test_only_one_replica_holds_a_language(redis):
    a = LanguageLease(redis, "sw", "daemon-a", ttl_ms=5000)
    b = LanguageLease(redis, "sw", "daemon-b", ttl_ms=5000)
    assert a.acquire() == 1
    assert b.acquire() is None
    assert a.holder() == "daemon-a"
    assert b.renew() is False and b.release() is False  # b cannot extend or drop a's hold
    assert a.renew() is True
    assert a.release() is True
    assert b.acquire() == 2  # tokens only grow


def test_languages_are_independent(redis):
    assert LanguageLease(redis, "sw", "a").acquire() == 1
    assert LanguageLease(redis, "yo", "b").acquire() == 1


def test_expired_lease_passes_on_and_fencing_refuses_the_stale_holder(redis):
    a = LanguageLease(redis, "yo", "daemon-a", ttl_ms=150)
    b = LanguageLease(redis, "yo", "daemon-b", ttl_ms=5000)
    token_a = a.acquire()
    assert a.fenced_set("state", "from-a") is True
    deadline = time.monotonic() + 5
    while b.acquire() is None:  # a stalls past its TTL
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.05)
    assert b.token == token_a + 1
    assert b.fenced_set("state", "from-b") is True
    # a still believes it holds the lease: its write with the old token is refused
    assert a.fenced_set("state", "late-from-a", token=token_a) is False
    assert redis.get("compass:{yo}:state") == b"from-b"
    assert a.renew() is False and a.token is None


def test_keys_share_the_language_hash_tag(redis):
    lease = LanguageLease(redis, "am", "x")
    lease.acquire()
    lease.fenced_set("trigger", "1")
    keys = sorted(k.decode() for k in redis.keys("compass:*"))
    assert keys == ["compass:{am}:lease", "compass:{am}:lease:fence", "compass:{am}:trigger",
                    "compass:{am}:trigger:fence"]


def test_ttl_is_validated(redis):
    with pytest.raises(ValueError, match="'ttl_ms' parameter of LanguageLease must be >= 100. Got 5 instead."):
        LanguageLease(redis, "en", "x", ttl_ms=5)


def test_hold_many_holds_as_hold_does_in_two_round_trips_at_most(redis):
    from infra.lease import hold_many

    mine = {lang: LanguageLease(redis, lang, "daemon-a", ttl_ms=5000) for lang in ("sw", "yo", "ha", "ig")}
    other = LanguageLease(redis, "ig", "daemon-b", ttl_ms=5000)
    assert other.acquire() == 1  # ig: another replica holds it
    assert hold_many(redis, list(mine.values())) == [1, 1, 1, None]  # taken (tokens per language), or refused
    assert mine["sw"].token == 1 and mine["ig"].token is None
    redis.delete(mine["yo"].key)  # yo's lease expired ...
    assert LanguageLease(redis, "yo", "daemon-b", ttl_ms=5000).acquire() == 2  # ... and another replica took it
    redis.delete(mine["ha"].key)  # ha's lease expired and nobody took it: taken again, with a newer token
    assert hold_many(redis, list(mine.values())) == [1, None, 2, None]
    assert (mine["yo"].token, mine["ha"].token) == (None, 2)
    assert redis.pttl(mine["sw"].key) > 4000  # renewed
    # the batch fences as the calls one by one: a's refused token for yo writes nothing
    assert LanguageLease(redis, "yo", "daemon-a").fenced_set("state", "stale", token=1) is True  # nobody wrote yet
    other_yo = LanguageLease(redis, "yo", "daemon-b")
    assert other_yo.fenced_set("state", "fresh", token=2) is True
    assert LanguageLease(redis, "yo", "daemon-a").fenced_set("state", "stale", token=1) is False


def test_queued_fenced_sets_fence_as_fenced_set_does(redis):
    a, b = LanguageLease(redis, "sw", "daemon-a"), LanguageLease(redis, "yo", "daemon-a")
    LanguageLease(redis, "yo", "daemon-b").fenced_set("state", "newer", token=5)
    with redis.pipeline(transaction=False) as pipe:
        a.queue_fenced_set(pipe, "state", "from-a", 1)
        b.queue_fenced_set(pipe, "state", "from-a", 4)  # older than yo's last writer
        assert pipe.execute() == [1, 0]
    assert redis.get("compass:{sw}:state") == b"from-a" and redis.get("compass:{yo}:state") == b"newer"
