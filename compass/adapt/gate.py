"""The promotion gate of an adapter update (§3.3.3 "validated before deployment", §5.5 retention bound).

A candidate replaces the current adapter only when both hold:
  adaptation:  its NLL on the held-out recent window drops by more than ``min_improvement`` (relative); with
               nothing held out (``adaptation_candidate`` None) an update is not promoted;
  retention:   its NLL on the retention set (previous anchors not trained this cycle, the gate file, held-out
               D_t when configured: ``compass/adapt/plan.py``) rises by at most ``margin`` (relative; §5.5 bounds
               forgetting to 5%). An empty retention set cannot be scored: the check is reported "not measured"
               (``retention_candidate`` None) and does not block, and the data plan carries a warning.
Relative change = (candidate - current) / current. Without a current adapter (a first version) it passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from compass.adapt.config import bad_param

_TOL = 1e-12


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    adaptation_current: float | None = None
    adaptation_candidate: float | None = None
    retention_current: float | None = None
    retention_candidate: float | None = None
    adaptation_change: float | None = None  # relative: (candidate - current) / current
    retention_change: float | None = None
    margin: float = 0.05
    min_improvement: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` object of a job report (and of the registry's promotion record, with ``outcome``)."""
        d = asdict(self)
        d["outcome"] = "pass" if self.passed else "fail"
        return d


def _rel(current: float, candidate: float) -> float:
    return (candidate - current) / current


def _nll(name: str, v: float | None, optional: bool) -> None:
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise bad_param(name, "gate", "a finite NLL > 0" + (" or None (no current adapter)" if optional else ""), v)


def gate(
    adaptation_current: float | None,
    adaptation_candidate: float | None,
    retention_current: float | None,
    retention_candidate: float | None,
    margin: float = 0.05,
    min_improvement: float = 0.0,
) -> GateResult:
    """Decide whether the candidate adapter may be promoted (see the module docstring)."""
    _nll("adaptation_candidate", adaptation_candidate, True)
    _nll("retention_candidate", retention_candidate, True)
    _nll("adaptation_current", adaptation_current, True)
    _nll("retention_current", retention_current, True)
    for name, v in (("margin", margin), ("min_improvement", min_improvement)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise bad_param(name, "gate", "a finite float >= 0", v)
    common = dict(adaptation_current=adaptation_current, adaptation_candidate=adaptation_candidate,
                  retention_current=retention_current, retention_candidate=retention_candidate, margin=margin,
                  min_improvement=min_improvement)
    if adaptation_current is None:
        return GateResult(True, ["no current adapter: the first version passes"], **common)
    if adaptation_candidate is None:  # nothing held out to score: an update that cannot show a gain is not promoted
        return GateResult(False, ["adaptation not measured: no held-out window rows to score"], **common)
    a = _rel(adaptation_current, adaptation_candidate)
    measured = retention_current is not None and retention_candidate is not None
    r = _rel(retention_current, retention_candidate) if measured else None
    reasons: list[str] = []
    adapt_ok = -a > min_improvement + _TOL
    keep_ok = r is None or r <= margin + _TOL  # NLLs from decimal text: (2.1 - 2.0) / 2.0 is 0.05000000000000004
    if adapt_ok:
        reasons.append(f"adaptation NLL improved by {-a:.2%} (> {min_improvement:.2%})")
    else:
        reasons.append(f"adaptation NLL changed by {a:+.2%}; needs a drop of more than {min_improvement:.2%}")
    if r is None:
        reasons.append("retention not measured: the retention set is empty (see the data plan's warnings)")
    elif keep_ok:
        reasons.append(f"retention NLL changed by {r:+.2%} (within +{margin:.2%})")
    else:
        reasons.append(f"retention NLL rose by {r:+.2%}, more than the margin +{margin:.2%}")
    return GateResult(adapt_ok and keep_ok, reasons, adaptation_change=a, retention_change=r, **common)
