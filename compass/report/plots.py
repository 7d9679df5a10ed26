"""PNG plots of a run (matplotlib, Agg backend: no display needed). Each function returns PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# marker style per event type on the timelines
EVENT_STYLE = {
    "drift_detected": ("v", "tab:red"),
    "update_enqueued": ("|", "tab:purple"),
    "update_started": (">", "tab:blue"),
    "adapter_promoted": ("o", "tab:green"),
    "adapter_rejected": ("x", "tab:orange"),
    "update_finished": ("s", "tab:gray"),
    "recluster_needed": ("D", "tab:brown"),
}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def js_timeline(
    lang: str, checks: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], t0: float
) -> bytes:
    """JS (eq. 5, bits) per check with theta, drift_detected triggers and update_enqueued marks."""
    fig, ax = plt.subplots(figsize=(8, 3))
    pts = [(c["at"] - t0, c["js"]) for c in checks if c.get("js") is not None]
    if pts:
        ax.plot(*zip(*pts, strict=True), marker=".", lw=1, label="JS")
    th = [(c["at"] - t0, c["theta"]) for c in checks if c.get("theta") is not None]
    if th:
        ax.step(*zip(*th, strict=True), where="post", ls="--", color="black", lw=1, label="theta")
    theta_at = dict(th)
    for kind, label in (("drift_detected", "trigger"), ("update_enqueued", "update enqueued")):
        xs = [e["at"] - t0 for e in events if e["type"] == kind]
        if not xs:
            continue
        if kind == "update_enqueued":
            for i, x in enumerate(xs):
                ax.axvline(x, color="tab:purple", ls=":", lw=1, label=label if i == 0 else None)
            continue
        ys = []
        for e in events:
            if e["type"] != kind:
                continue
            js = e.get("data", {}).get("js")
            ys.append(js if isinstance(js, int | float) else theta_at.get(e["at"] - t0, th[-1][1] if th else 0.0))
        ax.scatter(xs, ys, marker="v", color="tab:red", s=60, zorder=3, label=label)
    ax.set_title(f"{lang}: JS divergence vs theta")
    ax.set_xlabel("seconds since run start")
    ax.set_ylabel("JS (bits)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def update_timeline(events: Sequence[Mapping[str, Any]], languages: Sequence[str], t0: float) -> bytes:
    """One row per language, one marker per lifecycle event."""
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(len(languages), 1)))
    row = {lang: i for i, lang in enumerate(languages)}
    for kind, (marker, color) in EVENT_STYLE.items():
        pts = [(e["at"] - t0, row[e["language"]]) for e in events if e["type"] == kind and e["language"] in row]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, color=color, s=50, label=kind)
    ax.set_yticks(range(len(languages)), list(languages))
    ax.set_xlabel("seconds since run start")
    ax.grid(alpha=0.3, axis="x")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def bar_chart(counts: Mapping[str, float], title: str) -> bytes:
    """Selected auxiliary examples per source language (the paper's Figure 4), most first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(max(3, 0.5 * len(items) + 1), 2.6))
    ax.bar([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_title(title)
    ax.set_ylabel("selected")
    return _png(fig)


def loss_curves(train: Sequence[float], val: Sequence[float], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 2.8))
    if train:
        ax.plot(range(1, len(train) + 1), train, marker="o", label="train")
    if val:
        ax.plot(range(1, len(val) + 1), val, marker="s", label="validation")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (NLL)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend(fontsize=8)
    return _png(fig)
