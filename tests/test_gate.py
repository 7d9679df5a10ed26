"""compass/adapt/gate.py: the promotion gate, hand-computed."""

from __future__ import annotations

import pytest

from compass.adapt import AdaptError, gate


def test_a_better_candidate_passes_with_exact_relative_changes():
    g = gate(3.2, 2.88, 2.5, 2.55, margin=0.05)
    assert g.passed
    assert g.adaptation_change == pytest.approx(-0.1)  # (2.88 - 3.2) / 3.2
    assert g.retention_change == pytest.approx(0.02)  # (2.55 - 2.5) / 2.5
    d = g.to_dict()
    assert d["outcome"] == "pass" and d["passed"] is True and d["margin"] == 0.05 and len(d["reasons"]) == 2


def test_a_worse_candidate_is_rejected_on_adaptation():
    g = gate(2.0, 2.2, 2.5, 2.5)
    assert not g.passed
    assert g.adaptation_change == pytest.approx(0.1)
    assert "adaptation NLL changed by +10.00%" in g.reasons[0]
    assert g.to_dict()["outcome"] == "fail"


def test_forgetting_beyond_the_margin_is_rejected():
    g = gate(2.0, 1.5, 2.0, 2.12, margin=0.05)  # retention +6% > 5%
    assert not g.passed
    assert g.retention_change == pytest.approx(0.06)
    assert "more than the margin" in g.reasons[1]
    assert gate(2.0, 1.5, 2.0, 2.1, margin=0.05).passed  # exactly +5% is within the bound


def test_min_improvement_is_a_strict_relative_drop():
    assert not gate(2.0, 1.9, 2.0, 2.0, min_improvement=0.05).passed  # 5% drop is not > 5%
    assert gate(2.0, 1.8, 2.0, 2.0, min_improvement=0.05).passed


def test_first_version_passes_and_bad_input_is_named():
    g = gate(None, 3.0, None, 3.1)
    assert g.passed and g.adaptation_change is None and g.retention_change is None
    with pytest.raises(AdaptError, match="'adaptation_candidate'"):
        gate(2.0, float("nan"), 2.0, 2.0)
    with pytest.raises(AdaptError, match="'margin'"):
        gate(2.0, 1.0, 2.0, 2.0, margin=-1)
