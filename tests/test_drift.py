"""Drift core: eq. 3-4 distributions on hand-computed counts, and the eq. 6 trigger's guards in sequence."""

from __future__ import annotations

import numpy as np
import pytest

from compass.drift import TriggerState, decide, reference_distribution
from compass.drift.distributions import DistributionError
from compass.languages import LanguageSettings

SETTINGS = LanguageSettings(theta=0.15, min_samples=100, window_size=1000, cooldown_s=60, rearm_ratio=0.8)


def test_reference_distribution_eq3():
    # n_eval = [2, 0, 6], n_aux_selected = [2, 4, 6] -> [4, 4, 12] / 20
    p = reference_distribution(np.array([2, 0, 6]), np.array([2, 4, 6]))
    assert p.tolist() == [0.2, 0.2, 0.6]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: reference_distribution(np.array([1, 2]), np.array([1, 2, 3])), "n_eval has 2 buckets but"),
        (lambda: reference_distribution(np.array([0, 0]), np.array([0, 0])), "all zeros"),
        (lambda: reference_distribution(np.array([1, -1]), np.array([1, 1])), "finite counts >= 0"),
        (lambda: reference_distribution(np.zeros((2, 2)), np.zeros((2, 2))), "1-D vector"),
    ],
)
def test_distribution_errors(call, message):
    with pytest.raises(DistributionError, match=message):
        call()


def test_trigger_sequence_with_min_samples_hysteresis_and_cooldown():
    """A scripted stream of checks, one per 10 s; expected reasons worked out by hand from the rules."""
    checks = [  # (t, js, n_samples, expected reason)
        (0, 0.40, 50, "insufficient_samples"),  # high JS but too few samples
        (10, 0.10, 150, "below_threshold"),
        (20, 0.16, 150, "drift"),  # 0.16 > 0.15: fire, disarm
        (30, 0.30, 300, "disarmed"),  # still high, must fall below 0.12 first
        (40, 0.13, 300, "disarmed"),  # 0.13 >= 0.8 * 0.15 = 0.12
        (50, 0.11, 300, "rearmed"),  # < 0.12: re-armed, does not fire on this check
        (60, 0.20, 300, "cooldown"),  # 40 s after the trigger at t=20 < 60 s cooldown
        (80, 0.20, 300, "drift"),  # 60 s after: fires again
    ]
    state = TriggerState()
    got = []
    for t, js, n, _ in checks:
        d = decide(js, n, SETTINGS, state, now=float(t))
        state = d.state
        got.append(d.reason)
        assert d.fire == (d.reason == "drift")
    assert got == [c[3] for c in checks]
    assert state == TriggerState(armed=False, last_fired_at=80.0, last_update_at=None)


def test_new_reference_rearms_but_a_plain_update_does_not():
    fired = decide(0.5, 500, SETTINGS, TriggerState(), now=0.0).state
    assert fired.armed is False
    rejected = fired.updated(at=30.0)  # the update finished but the reference did not change
    assert rejected == TriggerState(armed=False, last_fired_at=0.0, last_update_at=30.0)
    assert decide(0.5, 500, SETTINGS, rejected, now=200.0).reason == "disarmed"
    promoted = fired.rereferenced(at=30.0)
    assert promoted == TriggerState(armed=True, last_fired_at=0.0, last_update_at=30.0)
    assert decide(0.5, 500, SETTINGS, promoted, now=80.0).reason == "cooldown"  # 50 s after the new reference
    assert decide(0.5, 500, SETTINGS, promoted, now=90.0).reason == "drift"


def test_cooldown_counts_from_the_update_when_it_is_later():
    state = TriggerState(armed=True, last_fired_at=0.0).updated(at=100.0)
    assert decide(0.5, 500, SETTINGS, state, now=150.0).reason == "cooldown"  # 50 s after the update
    assert decide(0.5, 500, SETTINGS, state, now=160.0).reason == "drift"


def test_disabled_language_never_fires():
    off = SETTINGS.model_copy(update={"enabled": False})
    assert decide(0.9, 10_000, off, TriggerState(), now=0.0).reason == "disabled"


def test_state_round_trips_as_plain_dict():
    state = TriggerState(armed=False, last_fired_at=12.5, last_update_at=None)
    assert TriggerState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize("js", [-0.1, 1.2, float("nan")])
def test_js_outside_bits_range_is_rejected(js):
    with pytest.raises(ValueError, match="JS divergence in bits"):
        decide(js, 500, SETTINGS, TriggerState(), now=0.0)
