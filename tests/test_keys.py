"""infra/keys.py: every Redis key's exact string (data already in Redis must still be found), hand-written."""

from __future__ import annotations

import pytest
from redis.cluster import key_slot

from infra.keys import KeyPrefixError, Keys, fence

K = Keys("cp")

KEYS = [  # (built, expected): one row per key family of the module docstring's table
    (K.window("sw")["window"], "cp:{sw}:window"),
    (K.window("sw")["counts"], "cp:{sw}:counts"),
    (K.window("sw")["offsets"], "cp:{sw}:offsets"),
    (K.window("sw")["recent"], "cp:{sw}:recent"),
    (K.window("sw")["meta"], "cp:{sw}:meta"),
    (K.window("sw")["quality"], "cp:{sw}:quality"),
    (K.window("sw")["ids"], "cp:{sw}:ids"),
    (K.status("yo"), "cp:{yo}:status"),
    (K.paused("yo"), "cp:{yo}:paused"),
    (K.force("yo"), "cp:{yo}:force"),
    (K.resume("yo"), "cp:{yo}:resume"),
    (K.quality("yo"), "cp:{yo}:quality"),
    (K.language("yo", "status"), "cp:{yo}:status"),
    (K.inbox("yo"), "cp:{yo}:inbox"),
    (K.snapshot("sw", "sw-1a2b"), "cp:{sw}:snapshot:sw-1a2b"),
    (K.reference("am"), "cp:{am}:ref"),
    (K.history_js("it"), "cp:{it}:history:js"),
    (K.history_events("it"), "cp:{it}:history:events"),
    (K.lease("am"), "cp:{am}:lease"),
    (K.worker_lock("tr"), "cp:{tr}:worker-lock"),
    (K.sampling("en", 2_941_000), "cp:{en}:sampling:2941000"),
    (K.serving_routes(), "cp:serving:routes"),
    (K.serving_targets(), "cp:serving:targets"),
    (K.unserved("counts"), "cp:{unserved}:counts"),
    (K.unserved("offsets"), "cp:{unserved}:offsets"),
    (K.unserved("emerging"), "cp:{unserved}:emerging"),
    (K.unserved_bucket(28_000_000), "cp:{unserved}:bucket:28000000"),
    (K.unserved_samples("ha"), "cp:{unserved}:samples:ha"),
    (K.lease("unserved"), "cp:{unserved}:lease"),
    (K.worker_pending(), "cp:{worker}:pending"),
    (K.worker_done("sw-1a2b"), "cp:{worker}:done:sw-1a2b"),
    (K.codebook_current(), "cp:codebook:current"),
    (K.codebook_publisher(), "cp:codebook:publisher"),
    (K.everything(), "cp:*"),
    (K.every_language("meta"), "cp:{*}:meta"),
    (Keys().status("en"), "compass:{en}:status"),
    (Keys("compass-demo.v1:x").inbox("en"), "compass-demo.v1:x:{en}:inbox"),
]


@pytest.mark.parametrize(("built", "expected"), KEYS)
def test_key_strings(built, expected):
    assert built == expected


def test_window_kinds_in_script_order():  # infra/window/ passes them to its Lua scripts as KEYS[1..7] in this order
    assert list(K.window("en")) == ["window", "counts", "offsets", "recent", "meta", "quality", "ids"]


@pytest.mark.parametrize(("key", "expected"), [
    ("cp:{sw}:status", "cp:{sw}:status:fence"),  # tagged: same slot as the key
    ("cp:{unserved}:emerging", "cp:{unserved}:emerging:fence"),
    ("cp:codebook:publisher", "{cp:codebook:publisher}:fence"),  # untagged: the key's name becomes the tag
])
def test_fence(key, expected):
    assert fence(key) == expected
    assert key_slot(fence(key).encode()) == key_slot(key.encode())


def test_one_language_one_slot():
    slots = {key_slot(k.encode()) for k in [*K.window("sw").values(), K.status("sw"), K.inbox("sw"),
                                              K.snapshot("sw", "j"), K.lease("sw"), K.history_js("sw")]}
    assert len(slots) == 1


@pytest.mark.parametrize(("key", "name", "expected"), [
    ("cp:{en}:meta", "meta", "en"),
    ("cp:{unserved}:meta", "meta", "unserved"),
    ("cp:{}:meta", "meta", ""),
    ("cp:{en}:counts", "meta", None),  # another key
    ("other:{en}:meta", "meta", None),  # another prefix
    ("cpx:{en}:meta", "meta", None),
    ("cp:meta", "meta", None),
])
def test_language_of(key, name, expected):
    assert K.language_of(key, name) == expected


@pytest.mark.parametrize("prefix", ["", "a*b", "a b", "a{b}", "a?", "a[b]", None, 3])
def test_bad_prefix(prefix):
    must = r"The 'prefix' parameter of Keys must be a non-empty string of letters, digits and _\.:- only\. Got "
    with pytest.raises(KeyPrefixError, match=must):
        Keys(prefix)


def test_keys_is_a_frozen_value():
    assert Keys("cp") == K and hash(Keys("cp")) == hash(K)
    with pytest.raises(AttributeError):
        K.prefix = "other"  # type: ignore[misc]


class _NoRedis:
    """Enough of a client to construct the stores (they register their scripts); never called."""

    def register_script(self, script: str) -> None:
        return None


def test_the_stores_build_their_keys_here(tmp_path):
    from daemon.scheduler.dispatch import inbox_key
    from daemon.worker.queue import JobQueue
    from daemon.worker.service import lock_key
    from infra.codebook import CodebookStore
    from infra.history import events_key, js_key
    from infra.lock import LanguageLease
    from infra.reference import reference_key
    from infra.unserved import UnservedStore
    from infra.window import WindowStore

    client = _NoRedis()
    lease = LanguageLease(client, "sw", "me", prefix="cp")
    unserved = UnservedStore(client, "cp")
    built = {  # as each store spells it -> as it must stay
        "window": (WindowStore(client, "cp").keys("sw"), K.window("sw")),
        "lease": (lease.key, "cp:{sw}:lease"),
        "lease fence": (lease._fence_key, "cp:{sw}:lease:fence"),
        "unserved lease": (LanguageLease(client, "unserved", "me", prefix="cp").key, "cp:{unserved}:lease"),
        "emerging": (unserved.key("emerging"), "cp:{unserved}:emerging"),
        "bucket": (unserved.bucket_key(7), "cp:{unserved}:bucket:7"),
        "samples": (unserved.samples_key("ha"), "cp:{unserved}:samples:ha"),
        "pending": (JobQueue(client, "cp").pending_key, "cp:{worker}:pending"),
        "codebook": (CodebookStore(tmp_path, None, "cp").pointer_key, "cp:codebook:current"),
        "inbox": (inbox_key("sw", "cp"), "cp:{sw}:inbox"),
        "worker lock": (lock_key("sw", "cp"), "cp:{sw}:worker-lock"),
        "ref": (reference_key("sw", "cp"), "cp:{sw}:ref"),
        "history js": (js_key("sw", "cp"), "cp:{sw}:history:js"),
        "history events": (events_key("sw", "cp"), "cp:{sw}:history:events"),
    }
    assert {name: got for name, (got, _) in built.items()} == {name: want for name, (_, want) in built.items()}
