"""infra/retry.py: the one retry policy (hand-computed delays; ``sleep`` records them, nothing really sleeps)."""

import random

import pytest

from infra.retry import Backoff, ceiling_s, hint_of, parse_retry_after, retrying


class Flaky:
    """Raises ``errors`` in turn, then returns "ok"; counts calls."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Hinted(Exception):
    def __init__(self, retry_after_s: object):
        super().__init__("hinted")
        self.retry_after_s = retry_after_s


@pytest.mark.parametrize("retry,base_s,max_s,expected", [
    (1, 1.0, 30.0, 1.0),
    (2, 1.0, 30.0, 2.0),
    (5, 1.0, 30.0, 16.0),
    (6, 1.0, 30.0, 30.0),  # 32 capped
    (3, 0.5, 100.0, 2.0),
    (4, 0.05, 1.6, 0.4),  # the monitor's outage cap min(30, base * 32) with base 0.05
    (9, 0.05, 1.6, 1.6),
    (2000, 1.0, 30.0, 30.0),  # no float overflow
    (3, 0.0, 10.0, 0.0),
])
def test_ceiling(retry, base_s, max_s, expected):
    assert ceiling_s(retry, base_s=base_s, max_s=max_s) == pytest.approx(expected)


def test_monitor_outage_formula_is_preserved():
    # the monitor's old hand-rolled min(30, b * 2 ** min(n - 1, 5)) equals the policy with max_s = min(30, b * 32)
    for b in (0.01, 0.05, 0.3, 1.0, 2.0, 45.0):
        for n in range(1, 12):
            old = min(30.0, b * 2 ** min(n - 1, 5))
            assert ceiling_s(n, base_s=b, max_s=min(30.0, b * 32)) == pytest.approx(old)


@pytest.mark.parametrize("jitter,low,high", [("none", 1.0, 1.0), (False, 1.0, 1.0), ("half", 0.5, 1.0),
                                             (True, 0.5, 1.0), ("full", 0.0, 1.0)])
def test_jitter_bounds(jitter, low, high):
    b = Backoff(base_s=1.0, max_s=100.0, jitter=jitter, rng=random.Random(7))
    for n in range(1, 8):
        for _ in range(50):
            assert low * 2 ** (n - 1) <= b.delay(n) <= high * 2 ** (n - 1)


def test_seeded_jitter_is_reproducible():
    first, second = (Backoff(base_s=1.0, max_s=100.0, rng=random.Random(3)) for _ in range(2))
    a = [first.delay(n) for n in range(1, 6)]
    assert a == [second.delay(n) for n in range(1, 6)]
    rng = random.Random(3)
    assert a == [rng.uniform(2 ** (n - 1) / 2, 2 ** (n - 1)) for n in range(1, 6)]


@pytest.mark.parametrize("hint,expected", [
    (7, 7.0),  # a longer hint wins over the back-off
    (0.1, 1.0),  # a shorter one does not shorten it
    (500, 60.0),  # capped at max_s
    (None, 1.0), ("7", 1.0), (float("nan"), 1.0), (True, 1.0),  # unusable hints are ignored
])
def test_hint_is_a_floor_capped_at_max(hint, expected):
    b = Backoff(base_s=1.0, max_s=60.0, jitter=False)
    assert b.delay(1, Hinted(hint)) == expected


@pytest.mark.parametrize("value,expected", [
    (None, None), ("", None), ("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None),
    ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),  # an HTTP date: 100 s after the epoch, "now" is 60
    ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # in the past
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=60.0) == expected


def test_hint_of_reads_the_attribute():
    assert (hint_of(Hinted(3)), hint_of(Hinted(-1)), hint_of(ValueError())) == (3.0, 0.0, None)


def test_retries_then_succeeds_with_exponential_delays():
    slept: list[float] = []
    call = Flaky(ConnectionError(), ConnectionError(), ConnectionError())
    r = retrying(on=ConnectionError, attempts=5, base_s=0.5, max_s=1.5, jitter=False, sleep=slept.append)
    assert r(call) == "ok"
    assert (call.calls, slept) == (4, [0.5, 1.0, 1.5])


def test_gives_up_after_attempts_and_reraises_the_error_itself():
    slept: list[float] = []
    call = Flaky(*[TimeoutError(f"t{i}") for i in range(5)])
    r = retrying(on=(ConnectionError, TimeoutError), attempts=3, base_s=1.0, max_s=10.0, jitter=False,
                 sleep=slept.append)
    with pytest.raises(TimeoutError, match="t2"):
        r(call)
    assert (call.calls, slept) == (3, [1.0, 2.0])


def test_other_errors_pass_through_at_once():
    slept: list[float] = []
    call = Flaky(KeyError("x"))
    with pytest.raises(KeyError):
        retrying(on=ConnectionError, attempts=None, base_s=1.0, max_s=1.0, sleep=slept.append)(call)
    assert (call.calls, slept) == (1, [])


def test_forever_and_before_sleep_and_iterator_form():
    slept: list[float] = []
    seen: list[tuple[int, str]] = []
    call = Flaky(*[ConnectionError(str(i)) for i in range(12)])
    r = retrying(on=ConnectionError, attempts=None, base_s=1.0, max_s=8.0, jitter=False, sleep=slept.append,
                 before_sleep=lambda s: seen.append((s.attempt_number, str(s.outcome.exception()))))
    for attempt in r:
        with attempt:
            result = call()
    assert result == "ok" and call.calls == 13
    assert slept == [1.0, 2.0, 4.0] + [8.0] * 9
    assert seen[:2] == [(1, "0"), (2, "1")] and len(seen) == 12


def test_hint_through_tenacity():
    slept: list[float] = []
    call = Flaky(Hinted(7))
    retrying(on=Hinted, attempts=2, base_s=0.001, max_s=60.0, sleep=slept.append)(call)
    assert slept == [7.0]


@pytest.mark.parametrize("kwargs,message", [
    ({"attempts": 0}, "The 'attempts' parameter of retrying must be an int >= 1 or None. Got 0 instead."),
    ({"attempts": True}, "'attempts' parameter"),
    ({"base_s": -1.0}, "The 'base_s' parameter of the retry policy must be a finite float >= 0. Got -1.0 instead."),
    ({"max_s": float("inf")}, "'max_s' parameter"),
    ({"jitter": "wide"}, "'jitter' parameter"),
])
def test_parameters_are_checked(kwargs, message):
    args = {"on": OSError, "attempts": 3, "base_s": 1.0, "max_s": 2.0, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        retrying(**args)
