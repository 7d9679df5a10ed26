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
