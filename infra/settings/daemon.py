"""The ``daemon:`` section: the drift daemon's check cadence, lease, update dispatch, stale-cluster checks and
the re-clustering the worker runs when clusters go stale (``recluster*``, daemon/worker/recluster.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compass.validation import Frozen


def _lease_rule(lease_ttl_ms: int, check_interval_s: float) -> str | None:
    if lease_ttl_ms <= check_interval_s * 1000:
        return (
            f"lease_ttl_ms ({lease_ttl_ms}) must exceed check_interval_s ({check_interval_s}) "
            "in ms, or the lease lapses between checks; raise lease_ttl_ms"
        )
    return None


class DaemonConfig(Frozen):
    """The drift daemon (`compass daemon`): per-language checks, the lease, update dispatch, stale clusters."""

    check_interval_s: float = Field(
        60.0, gt=0, le=86400, description="seconds between checks of a language, in (0, 86400]"
    )
    update_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="seconds a language stays `updating` without a worker report, > 0"
    )
    lease_ttl_ms: int = Field(
        180_000, ge=100, description="per-language lease TTL in ms, >= 100; keep it above check_interval_s"
    )
    events_group_id: str = Field("compass-daemon", min_length=1, description="Kafka group reading compass.events")
    events_poll_s: float = Field(1.0, gt=0, le=60, description="seconds between polls of compass.events, in (0, 60]")
    max_message_failures: int = Field(
        3, ge=1, le=1000, description="a worker report whose Redis write failed this many times in a row (Redis "
        "answering) is dead-lettered, in [1, 1000]",
    )
    snapshot_ttl_s: int = Field(7 * 86400, ge=60, description="expiry of a job's frozen window snapshot, seconds >= 60")
    stale_noise_share: float = Field(
        0.3, gt=0.0, le=1.0, description="recluster when this share of the window is noise, in (0, 1]"
    )
    stale_far_share: float = Field(
        0.3, gt=0.0, le=1.0, description="recluster when this share of recent points is far from every centroid"
    )
    stale_distance_quantile: float = Field(
        0.95, gt=0.0, lt=1.0, description="quantile of training distances that defines 'far', in (0, 1)"
    )
    stale_far_max_texts: int = Field(
        500, ge=0, description="the newest recent texts the far share covers (a check embeds only those added since "
        "the last one), >= 0; 0 turns the far share off"
    )
    history_js_max: int = Field(
        2000, ge=1, le=1_000_000, description="JS readings kept per language for the status page, in [1, 1000000]"
    )
    history_events_max: int = Field(
        500, ge=1, le=100_000, description="events kept per language for the status page, in [1, 100000]"
    )
    emerging_share: float = Field(
        0.02, gt=0.0, le=1.0, description="an unserved language emerges at this share of all queries, in (0, 1]"
    )
    emerging_min_count: int = Field(
        200, ge=1, description="...and with at least this many queries over the horizon, >= 1"
    )
    emerging_horizon_s: int = Field(
        86400, ge=60, le=90 * 86400, description="seconds over which unserved shares are measured, in [60, 7776000]"
    )
    emerging_rearm_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="an episode ends below this fraction of emerging_share, in (0, 1]"
    )
    recluster: Literal["auto", "manual"] = Field(
        "auto", description="auto: the worker re-fits, publishes and re-references on a recluster job; manual: it "
        "dead-letters the job (recluster_manual) and ops run `compass codebook build --from-windows`",
    )
    recluster_min_interval_s: float = Field(
        3600.0, ge=0, description="seconds between two re-clusterings, >= 0; a job inside it is skipped"
    )
    recluster_max_rows: int = Field(
        20_000, ge=2, le=10_000_000, description="rows a re-fit clusters (window queries + pool), in [2, 10000000]"
    )
    recluster_pool_share: float = Field(
        0.5, ge=0.0, le=1.0, description="at most this share of recluster_max_rows comes from the pool, in [0, 1]"
    )
    recluster_clusterer: Literal["kmeans", "hdbscan"] = Field("kmeans", description="clusterer of a re-fit")
    recluster_k: int | None = Field(
        None, ge=2, description="K of a kmeans re-fit, >= 2; null chooses K by silhouette (compass codebook build)"
    )
    recluster_seed: int = Field(0, ge=0, description="seed of the re-fit's sample and clusterer, >= 0")
    _rules = (_lease_rule,)
