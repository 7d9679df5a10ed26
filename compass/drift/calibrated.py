"""Thresholds learned on live traffic: the burn-in after each new reference, and the JS threshold it yields.

Why not theta from P_ref alone (``compass/drift/calibrate.py``): P_ref is eq. 3, the cluster mix of the cycle's
training data *including the auxiliary rows COMPASS selected*, so live traffic without any drift sits at a JS
offset above 0 against it (0.1-0.2 bits is common), and real traffic is burstier than multinomial sampling. A
null drawn from P_ref sees neither. Here the no-drift level is measured against *that* reference on *live*
traffic:

  burn-in  after a new reference, the next ``burn_in`` queries (their cluster ids, per check) are accumulated:
           their pooled counts C (the live mix P_live), the per-check counts (for the over-dispersion phi) and the
           JS readings seen meanwhile;
  null     ``n_boot`` windows of n queries are drawn the way live traffic produced them: a live mix p from its
           posterior given the burn-in, Dirichlet(C / phi + 1/2) (bursty queries are worth C / phi independent
           ones), then n / m batches of m queries (m = the mean queries per check), each a Dirichlet-multinomial
           with over-dispersion phi (phi = 1: multinomial); each window's JS against P_ref (eq. 5) is one null
           draw, so the eq. 3 offset is inside the null. The posterior is conservative where the burn-in was lucky
           (tests/test_lifecycle.py: a fraction of the budget on multinomial null runs) and protects where it was
           not: with the plug-in mix C / |C| instead, bursty stable streams false-alarmed 2.25 times per 10,000
           queries (0.75 with the posterior; budget 0.2; ``benchmarks/drift_detection.py``);
  budget   ``false_alarm_every`` F: expected queries between false alarms (alibi-detect's ``ert``). With m queries
           per check, a per-check false-alarm probability alpha = m / F spends that budget (overlapping windows
           make exceedances come in runs that the trigger's hysteresis turns into one alarm, so alarms are
           rarer: conservative), and theta is the (1 - alpha) quantile of the null, never below the largest JS
           the burn-in itself showed.

The null is drawn for the full window (``window_size``) and for ``min_samples`` (a window still filling is
noisier); ``JsThreshold.at(n)`` interpolates between them in 1/n, the way sampling noise of JS scales.

After a re-clustering the burn-in is not run live: traffic has already shifted (that is why the codebook was
re-fitted), and a live burn-in would learn the drift as the no-drift level. The reference then carries the
baseline its adapter was trained for (the last cycle's window rows re-assigned on the new codebook), and
``compass/drift/baseline.py`` builds a finished ``BurnIn`` from it: those counts as C, checks of the previous
reference's m, and its phi given outright (``BurnIn.phi``) since the stored rows have no per-check batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from compass.drift.calibrate import CalibrationError, js_rows

MAX_BATCHES = 64  # per-check count vectors kept for the dispersion estimate (oldest merged pairwise beyond this)
N_BOOT_MIN, N_BOOT_MAX = 2000, 40_000


@dataclass(frozen=True)
class BurnIn:
    """What the burn-in has seen of live traffic since the reference ``ref_id`` was installed (JSON-able)."""

    ref_id: str | None = None
    seen: int = 0  # queries observed
    checks: int = 0  # checks that brought new queries
    counts: tuple[int, ...] = ()  # pooled bucket counts of those queries
    batches: tuple[tuple[int, ...], ...] = ()  # per-check bucket counts (merged pairwise past MAX_BATCHES)
    js_max: float = 0.0  # largest JS reading of a full window during the burn-in
    phi: float | None = None  # over-dispersion given outright (a baseline's burn-in, no batches); None: measured

    def over_dispersion(self) -> float:
        """phi as the detectors use it: the one given, else the 90% upper bound measured between the checks."""
        return self.phi if self.phi is not None else dispersion(self.batches, UPPER_Z)

    def add(self, labels: np.ndarray, n_buckets: int, js: float | None) -> BurnIn:
        """The burn-in after one more check whose new queries fell in buckets ``labels``."""
        batch = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_buckets)[:n_buckets]
        pooled = batch + (np.asarray(self.counts, dtype=np.int64) if self.counts else 0)
        batches = list(self.batches)
        if len(labels):
            batches.append(tuple(int(c) for c in batch))
        if len(batches) > MAX_BATCHES:  # merge neighbours: fewer, larger batches still measure dispersion
            merged = [tuple(a + b for a, b in zip(batches[i], batches[i + 1], strict=True))
                      for i in range(0, len(batches) - 1, 2)]
            batches = merged + ([batches[-1]] if len(batches) % 2 else [])
        return replace(self, seen=self.seen + len(labels), checks=self.checks + (1 if len(labels) else 0),
                       counts=tuple(int(c) for c in pooled), batches=tuple(batches),
                       js_max=max(self.js_max, js or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": list(self.counts), "batches": [list(b) for b in self.batches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BurnIn:
        if not d:
            return cls()
        return cls(ref_id=d.get("ref_id"), seen=int(d.get("seen", 0)), checks=int(d.get("checks", 0)),
                   counts=tuple(int(c) for c in d.get("counts", ())),
                   batches=tuple(tuple(int(c) for c in b) for b in d.get("batches", ())),
                   js_max=float(d.get("js_max", 0.0)), phi=None if d.get("phi") is None else float(d["phi"]))


UPPER_Z = 1.28  # phi as used: its one-sided 90% upper confidence bound (a burn-in has only a few checks)


def dispersion(batches: tuple[tuple[int, ...], ...], z: float = 0.0) -> float:
    """Over-dispersion phi of per-check counts around their pooled mix: Pearson X^2 / degrees of freedom, >= 1.

    1 for multinomial sampling; a burst of one topic inside a check makes it larger. ``z`` > 0 gives an upper
    confidence bound instead of the estimate: X^2 / df scatters by about sqrt(2 / df), so phi * (1 + z sqrt(2 /
    df)). With fewer than two batches or one used bucket there is nothing to measure and 1 is returned."""
    b = np.asarray(batches, dtype=np.float64)
    if b.ndim != 2 or len(b) < 2:
        return 1.0
    sizes = b.sum(axis=1)
    b, sizes = b[sizes > 0], sizes[sizes > 0]
    total = b.sum(axis=0)
    used = total > 0
    if len(b) < 2 or used.sum() < 2:
        return 1.0
    p = total[used] / total.sum()
    expected = sizes[:, None] * p[None, :]
    x2 = float((((b[:, used] - expected) ** 2) / expected).sum())
    df = (len(b) - 1) * (int(used.sum()) - 1)
    return max(1.0, x2 / df * (1.0 + z * math.sqrt(2.0 / df)))


@dataclass(frozen=True)
class JsThreshold:
    """A calibrated JS threshold (bits) and how it was derived; ``at(n)`` for a window of n queries."""

    theta_full: float  # for a full window (window_size queries)
    theta_min: float  # for a window of min_samples queries
    window_size: int
    min_samples: int
    per_check_alpha: float  # false-alarm probability per check that spends the budget
    queries_per_check: float  # m, measured in the burn-in
    dispersion: float  # phi, measured in the burn-in
    null_mean: float  # mean JS of a no-drift full window against P_ref: the eq. 3 offset plus sampling noise
    burn_in_js_max: float  # the floor: the largest JS the burn-in showed
    burn_in_queries: int
    n_boot: int
    how: str = field(default="")

    def at(self, n: int) -> float:
        """The threshold for a window of ``n`` queries: linear in 1/n between min_samples and window_size."""
        lo, hi = self.min_samples, self.window_size
        if n >= hi or lo >= hi:
            return self.theta_full
        n = max(n, lo)
        w = (1.0 / n - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
        return self.theta_full + w * (self.theta_min - self.theta_full)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> JsThreshold | None:
        return None if not d else cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def null_windows(p_ref: np.ndarray, live: np.ndarray, n: int, m: float, phi: float, n_boot: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` null draws of JS(P_ref || P_mon) for windows of ``n`` live queries (see the module docstring)."""
    k = len(p_ref)
    live = np.asarray(live, dtype=np.float64)
    mixes = rng.dirichlet(live / max(1.0, phi) + 0.5, size=n_boot)  # the live mix, as uncertain as the burn-in left it
    m = max(1, min(n, int(round(m))))
    n_batches, last = divmod(n, m)
    sizes = [m] * n_batches + ([last] if last else [])
    counts = np.zeros((n_boot, k))
    for size in sizes:
        if phi > 1.0 + 1e-9 and size > 1:
            # Dirichlet-multinomial with E = mix and variance phi x multinomial at this batch size
            precision = max((size - phi) / (phi - 1.0), 1e-3)
            g = rng.gamma(mixes * precision + 1e-12)  # a Dirichlet row per window, drawn as normalised gammas
            q = g / g.sum(axis=1, keepdims=True)
        else:
            q = mixes
        counts += rng.multinomial(size, q / q.sum(axis=1, keepdims=True))
    return js_rows(p_ref, counts / n)


def calibrate_js(p_ref: np.ndarray, burn: BurnIn, window_size: int, min_samples: int, false_alarm_every: float,
                 seed: int = 0) -> JsThreshold:
    """The JS threshold that spends ``false_alarm_every`` on the traffic the burn-in saw (module docstring)."""
    p = np.asarray(p_ref, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise CalibrationError(f"p_ref: got {p.tolist()}; give counts or probabilities >= 0 with a positive sum")
    p = p / p.sum()
    if burn.seen < 1 or burn.checks < 1:
        raise CalibrationError("burn-in: no queries seen yet; a threshold needs live traffic against the reference")
    if len(burn.counts) != len(p):
        raise CalibrationError(f"burn-in counts have {len(burn.counts)} buckets but P_ref has {len(p)}; the "
                               "burn-in belongs to another codebook: restart it")
    m = burn.seen / burn.checks
    alpha = min(0.5, m / float(false_alarm_every))
    phi = burn.over_dispersion()
    n_boot = int(min(N_BOOT_MAX, max(N_BOOT_MIN, math.ceil(20 / alpha))))
    rng = np.random.default_rng(seed)
    live = np.asarray(burn.counts, dtype=np.float64)
    thetas = []
    null_mean = 0.0
    for n in (window_size, min_samples):
        null = null_windows(p, live, n, m, phi, n_boot, rng)
        if n == window_size:
            null_mean = float(null.mean())
        q = float(np.quantile(null, 1.0 - alpha, method="higher"))
        thetas.append(min(1.0, max(q, burn.js_max if n == window_size else 0.0, 1e-4)))
    how = (f"(1 - {alpha:.2g}) quantile of {n_boot} no-drift windows of live traffic (burn-in {burn.seen} queries, "
           f"{m:.0f} per check, dispersion {phi:.2f}) against P_ref, floored at the burn-in's largest JS "
           f"{burn.js_max:.3f}; budget one false alarm per {false_alarm_every:,.0f} queries")
    return JsThreshold(theta_full=thetas[0], theta_min=max(thetas[1], thetas[0]), window_size=window_size,
                       min_samples=min_samples, per_check_alpha=alpha, queries_per_check=m, dispersion=phi,
                       null_mean=null_mean, burn_in_js_max=burn.js_max, burn_in_queries=burn.seen, n_boot=n_boot,
                       how=how)
