"""What on-call reads about one language (the API's ``/v1/languages/<l>``, the status page, ``compass explain``),
and the readiness probe (``/readyz``)."""

from __future__ import annotations

from typing import Any

import redis

from compass.drift.lifecycle import detector_view
from daemon.scheduler.dispatch import Dispatcher
from daemon.scheduler.explain import LabelCache, explain_window
from daemon.scheduler.metrics import DaemonMetrics
from daemon.scheduler.state import LanguagesSource, LanguageStatus, effective_threshold
from infra.clients import REDIS_ERRORS
from infra.reference import BadReference, get_reference
from infra.window import WindowStore


class LanguageViews:
    """Reads a language's window, P_ref and stored status into plain dicts for people."""

    def __init__(self, client: redis.Redis, prefix: str, windows: WindowStore, languages: LanguagesSource,
                 labels: LabelCache, store_examples: bool):
        self.client = client
        self.prefix = prefix
        self.windows = windows
        self.languages = languages
        self.labels = labels  # the codebooks' cluster labels
        self.store_examples = store_examples  # codebook.store_examples: queries may appear in explanations

    def describe(self, lang: str, st: LanguageStatus, paused: bool, lease_holder: str | None) -> dict[str, Any]:
        """Window fill, JS, the detector and its effective threshold, state, stuck or backing off, adapter version,
        last trigger, the explanation of the current window."""
        settings = self.languages.current.get(lang)
        snap = self.windows.snapshot(lang)
        try:
            ref = get_reference(self.client, lang, self.prefix)
            ref_view = None if ref is None else {"adapter_version": ref.adapter_version,
                                                 "codebook_version": ref.codebook_version,
                                                 "created_at": ref.created_at}
        except BadReference as e:
            ref_view = {"error": str(e)}
        last = st.last_check or {}
        detector = detector_view(st.drift, settings, last.get("statistic"), last.get("threshold"))
        if detector["effective_threshold"] is None:  # never checked since the lifecycle: what it would use now
            detector["effective_threshold"] = effective_threshold(st.drift, settings, snap.size)
        return {
            "language": lang,
            "enabled": settings.enabled and lang in self.languages.current.languages,
            "paused": paused,
            "state": "paused" if paused else st.phase if st.phase in ("updating", "stuck") else last.get("state"),
            "phase": st.phase,
            "window": {"size": snap.size, "window_size": settings.window_size,
                       "fill": snap.size / settings.window_size, "codebook_version": snap.codebook_version,
                       # the rate the consumers kept its queries at (meta, now) and its pace at the last check:
                       # sampling stretches the span, not the JS null (compass/drift/inflow.py)
                       "sampling_rate": snap.sampling_rate, "sampled_out": snap.sampled_out,
                       "inflow_qps": last.get("inflow_qps"),
                       "window_span_s": last.get("window_span_s"), "traffic_qps": last.get("traffic_qps")},
            "js": last.get("js"),
            "theta": settings.theta,
            "effective_threshold": detector["effective_threshold"],
            "detector": detector,
            "rearm_below": settings.rearm_below,
            "min_samples": settings.min_samples,
            "cooldown_s": settings.cooldown_s,
            "armed": st.trigger.armed,
            "failures": st.failures,
            "retry_at": st.retry_at,
            "stuck": st.stuck,
            "noise_share": last.get("noise_share"),
            "reference": ref_view,
            "adapter_version": st.adapter_version or (ref_view or {}).get("adapter_version"),
            "job": st.job,
            "last_check": st.last_check,
            "last_trigger": st.last_trigger,
            "last_update": st.last_update,
            "lease_holder": lease_holder,
            "explanation": self.explain(lang),
        }

    def explain(self, lang: str, top: int = 5) -> dict[str, Any]:
        """Which clusters drive JS(P_ref || window) now, with their labels (daemon/scheduler/explain.py)."""
        snap = self.windows.snapshot(lang)
        try:
            ref = get_reference(self.client, lang, self.prefix)
            return explain_window(ref, snap, self.labels.get(snap.codebook_version), top=top,
                                  examples=self.store_examples)
        except Exception as e:  # a bad P_ref, a damaged window: the rest of describe() still answers
            return {**explain_window(None, snap, None), "reason": f"{type(e).__name__}: {e}"}


def readiness(client: redis.Redis, dispatcher: Dispatcher, topic: str, metrics: DaemonMetrics) -> dict[str, str]:
    """Problems per service ("ok" when reachable): Redis by PING, Kafka by a metadata request for ``topic``."""
    out = {}
    try:
        client.ping()
        out["redis"] = "ok"
    except REDIS_ERRORS as e:
        out["redis"] = f"unreachable: {e}"
    try:
        dispatcher.producer.partitions_for(topic)
        out["kafka"] = "ok"
    except Exception as e:
        out["kafka"] = f"unreachable: {e}"
    for service, state in out.items():
        metrics.ready.labels(service).set(1 if state == "ok" else 0)
    return out
