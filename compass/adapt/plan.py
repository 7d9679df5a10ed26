"""The data plan of one adapter update (§3.1.1, §3.2.4, §3.3.3): which rows train, which rows judge. Pure.

Every row the cycle touches is in exactly one role, and the plan lists their ids (``UpdatePlan.data``):

  train      D_new, trained with the task loss:
               * D_t whole, every cycle (the paper's target data), except the ``targets`` gate rows below;
               * S = COMPASS selection (§3.2) over the candidates D_aux ∪ (eligible window rows), guided by the
                 kept part of the recent window E_t, budget |S| = B * |D_t| with |D_t| the whole target set
                 (§3.2.4). Eligible window rows are the labelled ones (carrying a ``response``); unlabelled
                 queries only with ``train_on_queries`` (a query alone teaches the model to continue queries).
  gate       never trained on:
               * adaptation: ``holdout_fraction`` of the recent window (seeded), the eq. 5 distribution the
                 update must fit;
               * retention: the previous version's anchors that are not in this cycle's D_new (B_anchor is
                 replayed by L_DAR, which is its purpose; it is scored, not task-trained), the rows of an optional
                 per-language gate file, and, only when ``gate.holdout_from_targets`` > 0, a share of D_t split
                 once at bootstrap and stored in the registry (``target_holdout``), so nothing is withheld
                 silently.
  excluded   window rows not trained because they carry no response (``train_on_queries`` false) and selected
             rows dropped by ``max_examples`` (S only: D_t is never capped).

Clusters: the selection's clusters are fitted per target on D_t ∪ E_t ∪ D_aux (§3.1.1, App. E model selection,
``compass.select.clusters``), not taken from the monitoring codebook. The codebook still defines the buckets of
P_ref (eq. 3) and of the anchors, because the monitor compares its window with P_ref on those buckets (eq. 5-6).

Reference rows (``reference_rows``, ``compass/drift/reference_rows.py``): "window" = every recent row (weight 1),
"target" = every D_t row when D_t stood in for E_t (no usage proxy), "selected" = each distinct selected row
(pool or window), weight = its repetition count; with ``window_counts=None`` a recount of these rows on the same
codebook equals ``counts`` exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compass.adapt.config import AdaptError, bad_param
from compass.drift import reference_distribution
from compass.drift.reference_rows import ReferenceRows
from compass.embed import l2_normalize

_STREAM_HOLDOUT, _STREAM_CAP, _STREAM_TARGETS = 11, 13, 14


@dataclass(frozen=True)
class Example:
    id: str
    text: str  # what is trained on ("prompt\nresponse" for instruction data)
    source: str  # "target", "selected" (from D_aux) or "window" (a selected window row)


@dataclass(frozen=True)
class WindowRow:
    """One query of the frozen recent window; ``response`` makes it a labelled (trainable) row."""

    id: str
    text: str
    response: str | None = None


@dataclass(frozen=True)
class PlanSettings:
    """The knobs of the data plan (worker.gate / worker settings), checked here so a bad value names its field."""

    budget: float
    holdout_fraction: float = 0.2  # gate.holdout_fraction: share of the window held out for adaptation
    train_on_queries: bool = False  # worker.train_on_queries: unlabelled window queries may be selected
    holdout_from_targets: float = 0.0  # gate.holdout_from_targets: share of D_t held out for retention
    max_examples: int | None = None  # cap on the selected rows (D_t is trained whole)
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "PlanSettings"
        if not isinstance(self.budget, int | float) or isinstance(self.budget, bool) or self.budget < 0:
            raise bad_param("budget", owner, "a number >= 0 (|S| = budget * |D_t|, §3.2.4)", self.budget)
        if not 0 < self.holdout_fraction < 1:
            raise bad_param("holdout_fraction", owner, "a share in (0, 1) of the window", self.holdout_fraction)
        if not 0 <= self.holdout_from_targets < 1:
            raise bad_param("holdout_from_targets", owner, "a share in [0, 1) of D_t (0 = train D_t whole)",
                            self.holdout_from_targets)
        if not isinstance(self.train_on_queries, bool):
            raise bad_param("train_on_queries", owner, "true or false", self.train_on_queries)
        if self.max_examples is not None and (isinstance(self.max_examples, bool) or self.max_examples < 1):
            raise bad_param("max_examples", owner, "an int >= 1 or null", self.max_examples)


@dataclass
class UpdatePlan:
    train: list[Example]  # D_new
    train_X: np.ndarray  # (n, d) embeddings of D_new's rows (anchor selection)
    train_labels: np.ndarray  # (n,) codebook cluster ids, -1 = noise
    adaptation: list[str]  # held-out recent window texts
    retention: list[str]  # previous anchors not trained + gate file rows + held-out D_t rows
    counts: np.ndarray  # (K+1,) eq. 3 numerators on the codebook's buckets: window counts + selected
    p_ref: np.ndarray  # (K+1,)
    reference_rows: ReferenceRows  # the rows behind ``counts`` (module docstring), for P_ref on another codebook
    selection: dict[str, Any] = field(default_factory=dict)  # the job report's "selection" object
    kind: str = "compass"  # "target_only" when there was no usage proxy
    data: dict[str, Any] = field(default_factory=dict)  # the explicit data plan: ids of every role
    target_holdout: list[str] = field(default_factory=list)  # D_t ids held out for retention (stored per version)

    @property
    def anchor_rows(self) -> np.ndarray:
        """Rows of ``train`` the next anchors come from: the cycle's own rows (S and window). D_t is trained whole
        every cycle, so replaying it would spend B_anchor on rows that never leave D_new; D_t only as fallback."""
        rows = np.asarray([i for i, e in enumerate(self.train) if e.source != "target"], np.int64)
        return rows if len(rows) else np.arange(len(self.train), dtype=np.int64)


def record_text(record: Any) -> str:
    """Training text of a record: the query, then its response on the next line when there is one."""
    response = getattr(record, "response", None)
    return f"{record.text}\n{response}" if response else record.text


def window_rows(recent: Sequence[Any]) -> list[WindowRow]:
    """WindowRow list from (id, text), (id, text, response) tuples, records or WindowRows."""
    out = []
    for r in recent:
        if isinstance(r, WindowRow):
            out.append(r)
        elif isinstance(r, tuple | list):
            out.append(WindowRow(str(r[0]), str(r[1]), r[2] if len(r) > 2 else None))
        else:
            out.append(WindowRow(str(r.id), str(r.text), getattr(r, "response", None)))
    return out


def target_holdout(ids: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The D_t ids held out for the retention gate (``gate.holdout_from_targets``), split once at bootstrap:
    seeded, at least one row and one kept when there are >= 2 rows and fraction > 0, in D_t's order."""
    if fraction <= 0:
        return []
    _, out = _split(len(ids), fraction, seed, _STREAM_TARGETS)
    return [ids[k] for k in out.tolist()]


def _split(n: int, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row indices, sorted; at least one held out and one kept when n >= 2."""
    if n < 2:
        return np.arange(n), np.zeros(0, np.int64)
    n_out = min(n - 1, max(1, round(fraction * n)))
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def _noise_to_minus_one(buckets: np.ndarray, k: int) -> np.ndarray:
    b = np.asarray(buckets, dtype=np.int64)
    return np.where(b >= k, -1, b)


def _unit_rows(ids: Sequence[str], source: str, X: np.ndarray, weights: np.ndarray, dim: int) -> ReferenceRows:
    """``ReferenceRows`` of one source; rows re-normalised so a stored row assigns like the one that was counted."""
    x = l2_normalize(np.asarray(X, dtype=np.float32)) if len(ids) else np.zeros((0, dim), np.float32)
    return ReferenceRows(tuple(ids), (source,) * len(ids), np.asarray(weights, np.float64), x)


def _nearest_codebook_cluster(clusters: Any, t_lab: np.ndarray, r_lab: np.ndarray, p_lab: np.ndarray,
                              k_sel: int) -> list[int | None]:
    """For each selection cluster (then its noise bucket), the codebook cluster most of its rows fall in (None when
    they are all codebook noise): how the report names per-target clusters with the monitor's labels."""
    sel = np.concatenate([np.asarray(x, np.int64) for x in (clusters.target, clusters.window, clusters.pool)])
    cb = np.concatenate([t_lab, r_lab, p_lab])
    out: list[int | None] = []
    for c in [*range(k_sel), -1]:
        b = cb[(sel == c) & (cb >= 0)]
        out.append(int(np.bincount(b).argmax()) if len(b) else None)
    return out


def _rows2d(X: np.ndarray, d: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X if X.size else np.zeros((0, d), np.float32)


def plan_update(
    lang: str,
    target: Sequence[Any],
    X_target: np.ndarray,
    target_buckets: np.ndarray,
    recent: Sequence[Any],
    X_recent: np.ndarray,
    recent_buckets: np.ndarray,
    pool: Sequence[Any],
    X_pool: np.ndarray,
    pool_buckets: np.ndarray,
    centroids: np.ndarray,
    *,
    settings: PlanSettings,
    clusters: Any = None,
    clustering: Any = None,
    window_counts: np.ndarray | None = None,
    prev_anchors: Sequence[tuple[str, str]] = (),
    gate_rows: Sequence[Any] = (),
    targets_held_out: Collection[str] | None = None,
    method: str = "compass",
) -> UpdatePlan:
    """The data of one update (module docstring). ``*_buckets`` are the monitoring codebook's bucket ids (noise = K,
    as ``Codebook.assign``) and ``centroids`` its K centroids: they define P_ref. ``clusters`` (a
    ``compass.select.clusters.SelectionClusters`` over exactly D_t ∪ E_t ∪ D_aux) are the selection's; without them
    they are fitted here with ``clustering`` (a ``ClusteringConfig``, App. E defaults). ``targets_held_out``: the
    stored D_t split of an earlier cycle; None splits it now when ``settings.holdout_from_targets`` > 0."""
    from compass.select import SelectionConfig, select

    if not isinstance(settings, PlanSettings):
        raise bad_param("settings", "plan_update", "a PlanSettings", type(settings).__name__)
    if len(target) < 1:
        raise AdaptError(f"The target data D_t of {lang!r} must hold at least 1 record. Got 0. Fix: add records "
                         "to the language's targets file.")
    s = settings
    window = window_rows(recent)
    dim = int(np.asarray(X_target).shape[1])
    X_target, X_recent, X_pool = (_rows2d(X, dim) for X in (X_target, X_recent, X_pool))
    k = int(np.asarray(centroids).shape[0])
    size = k + 1
    t_lab = _noise_to_minus_one(target_buckets, k)
    r_lab = _noise_to_minus_one(recent_buckets, k)
    p_lab = _noise_to_minus_one(pool_buckets, k)

    target_ids = [str(r.id) for r in target]
    if targets_held_out is None:
        held = target_holdout(target_ids, s.holdout_from_targets, s.seed)
    else:
        held = [i for i in target_ids if i in set(targets_held_out)]
    held_set = set(held)
    t_train = np.asarray([i for i, tid in enumerate(target_ids) if tid not in held_set], np.int64)
    if not len(t_train):
        raise AdaptError(f"{lang}: every D_t row is held out for the gate ({len(held)} rows). Fix: lower "
                         "gate.holdout_from_targets or add target records.")
    r_keep, r_out = _split(len(window), s.holdout_fraction, s.seed, _STREAM_HOLDOUT)
    labelled = np.asarray([bool(window[i].response) for i in r_keep], bool)
    cand = r_keep if s.train_on_queries else r_keep[labelled] if len(r_keep) else r_keep
    unlabelled = [] if s.train_on_queries else [window[i].id for i in r_keep[~labelled]] if len(r_keep) else []

    kind = "compass" if len(r_keep) else "target_only"
    summary: dict[str, Any] = {"method": method, "budget": s.budget, "n_target": len(target),
                               "n_recent": len(window), "n_pool": len(pool), "n_candidates": len(pool) + len(cand),
                               "n_selected": 0, "clusters": [], "source_languages": {}, "shortfall_clusters": [],
                               "clustering": None}
    # S as (candidate row, repetitions); candidate rows index pool then the eligible window rows
    rows, reps = np.zeros(0, np.int64), np.zeros(0, np.int64)
    X_cand = np.concatenate([X_pool, X_recent[cand]]) if len(cand) else X_pool
    if kind == "compass" and len(X_cand):
        if clusters is None:
            from compass.select.clusters import ClusteringConfig, fit_selection_clusters

            clusters = fit_selection_clusters(X_target, X_recent, X_pool, clustering or ClusteringConfig(seed=s.seed))
        summary["clustering"] = clusters.summary
        cand_lab = np.concatenate([np.asarray(clusters.pool, np.int64), np.asarray(clusters.window, np.int64)[cand]])
        # §3.2.4: |S| = B * |D_t| over the whole D_t (its held-out rows are still D_t's distribution)
        sel = select(X_target, X_recent[r_keep], X_cand, SelectionConfig(budget=s.budget, method=method, seed=s.seed),
                     labels=(np.asarray(clusters.target, np.int64), np.asarray(clusters.window, np.int64)[r_keep],
                             cand_lab, np.asarray(clusters.centroids, np.float32)),
                     pool_langs=[p.lang for p in pool] + [lang] * len(cand), target_lang=lang)
        rows, reps = sel.pool_indices.astype(np.int64), sel.counts.astype(np.int64)
        st = sel.stats
        near = _nearest_codebook_cluster(clusters, t_lab, r_lab, p_lab, len(st.n_t) - 1)
        summary["clusters"] = [
            {"cluster": c, "n_t": int(st.n_t[c]), "n_eval": int(st.n_eval[c]), "n_aux": int(st.n_aux[c]),
             "w_tilde": float(st.w_tilde[c]), "quota": int(sel.quotas[c]), "final_quota": int(sel.final_quotas[c]),
             "selected": int(sel.selected_per_cluster[c]), "codebook_cluster": near[c]}
            for c in range(len(st.n_t))
        ]
        summary["shortfall_clusters"] = [int(c) for c in sel.shortfall_clusters]

    capped: list[str] = []
    if s.max_examples is not None and int(reps.sum()) + len(t_train) > s.max_examples:
        # the cap drops selected units (seeded), never D_t rows: D_t is trained whole (§3.2.4)
        room = max(0, s.max_examples - len(t_train))
        units = np.repeat(np.arange(len(rows)), reps)
        keep = np.sort(np.random.default_rng([s.seed, _STREAM_CAP]).permutation(len(units))[:room])
        kept = np.bincount(units[keep], minlength=len(rows)) if len(rows) else np.zeros(0, np.int64)
        n_pool_c = len(pool)
        capped = [pool[r].id if r < n_pool_c else window[cand[r - n_pool_c]].id
                  for r, kk in zip(rows.tolist(), kept.tolist(), strict=True) if kk == 0]
        nz = kept > 0
        rows, reps = rows[nz], kept[nz].astype(np.int64)

    def cand_row(r: int) -> tuple[str, str, np.ndarray, int, str, str]:
        """(id, text, x, codebook label, source, lang) of candidate row r."""
        if r < len(pool):
            p = pool[r]
            return str(p.id), record_text(p), X_pool[r], int(p_lab[r]), "selected", p.lang
        w = cand[r - len(pool)]
        return window[w].id, record_text(window[w]), X_recent[w], int(r_lab[w]), "window", lang

    items: list[tuple[Example, np.ndarray, int]] = []
    items += [(Example(target_ids[i], record_text(target[i]), "target"), X_target[i], int(t_lab[i])) for i in t_train]
    sel_rows = [cand_row(r) for r in rows.tolist()]
    langs: Counter[str] = Counter()
    sel_counts = np.zeros(size, np.float64)
    for (rid, text, x, lab, source, rlang), c in zip(sel_rows, reps.tolist(), strict=True):
        items += [(Example(rid, text, source), x, lab)] * c
        langs[rlang] += c
        sel_counts[k if lab < 0 else lab] += c
    summary.update(n_selected=int(reps.sum()), source_languages=dict(langs.most_common()),
                   selected_per_bucket=sel_counts.astype(int).tolist())  # on the codebook's buckets (eq. 3)

    if window_counts is not None and len(window_counts) == size:
        n_eval = np.asarray(window_counts, dtype=np.float64)
    else:
        n_eval = np.bincount(np.where(r_lab < 0, k, r_lab), minlength=size).astype(np.float64)
    usage = _unit_rows([w.id for w in window], "window", X_recent, np.ones(len(window)), dim)
    if n_eval.sum() == 0:  # no usage proxy: D_t's own distribution stands in for E_t
        n_eval = np.bincount(np.where(t_lab < 0, k, t_lab), minlength=size).astype(np.float64)
        usage = _unit_rows(target_ids, "target", X_target, np.ones(len(target)), dim)
    X_sel = np.stack([r[2] for r in sel_rows]) if sel_rows else np.zeros((0, dim), np.float32)
    selected = _unit_rows([r[0] for r in sel_rows], "selected", X_sel, reps, dim)

    train_ids = {e.id for e, _, _ in items}
    old_anchors = [(i, t) for i, t in prev_anchors if i not in train_ids]
    gate_file = [(str(r.id), record_text(r)) for r in gate_rows if str(r.id) not in train_ids]
    adaptation = [window[i] for i in r_out]
    retention = [t for _, t in old_anchors] + [t for _, t in gate_file] + [record_text(target[i]) for i, tid in
                                                                          enumerate(target_ids) if tid in held_set]
    warnings = []
    if not retention and prev_anchors:
        warnings.append("retention set is empty: every previous anchor is trained this cycle and no gate file or "
                        "D_t holdout is configured (set worker.gate.retention_dir or gate.holdout_from_targets)")
    if len(t_train) > (s.max_examples or len(t_train)):
        warnings.append(f"D_t alone ({len(t_train)} rows) exceeds max_examples ({s.max_examples}); D_t is trained "
                        "whole, only S is capped")
    per_source: dict[str, Counter[str]] = {"target": Counter(), "selected": Counter(), "window": Counter()}
    for e, _, _ in items:
        per_source[e.source][e.id] += 1
    data = {
        "language": lang, "kind": kind, "method": method, "budget": s.budget, "n_target": len(target),
        "budget_rows": int(np.floor(s.budget * len(target) + 0.5)),
        "settings": {"holdout_fraction": s.holdout_fraction, "train_on_queries": s.train_on_queries,
                     "holdout_from_targets": s.holdout_from_targets, "max_examples": s.max_examples, "seed": s.seed},
        "train": {"target": list(per_source["target"]),
                  "selected": [[i, c] for i, c in per_source["selected"].items()],
                  "window": [[i, c] for i, c in per_source["window"].items()], "n_examples": len(items)},
        "gate": {"adaptation": [w.id for w in adaptation],
                 "retention": {"anchors": [i for i, _ in old_anchors], "file": [i for i, _ in gate_file],
                               "targets": list(held)}},
        "excluded": {"unlabelled_window": unlabelled, "capped": capped},
        "window": {"n": len(window), "labelled": sum(1 for w in window if w.response), "held_out": len(r_out),
                   "candidates": len(cand)},
        "clusters": summary["clustering"], "warnings": warnings,
    }
    return UpdatePlan(
        train=[e for e, _, _ in items],
        train_X=np.stack([x for _, x, _ in items]).astype(np.float32),
        train_labels=np.asarray([lab for _, _, lab in items], np.int64),
        adaptation=[record_text(w) for w in adaptation],
        retention=retention,
        counts=n_eval + sel_counts,
        p_ref=reference_distribution(n_eval, sel_counts),  # eq. 3
        reference_rows=ReferenceRows.concat([usage, selected], dim),
        selection=summary,
        kind=kind,
        data=data,
        target_holdout=list(held),
    )
