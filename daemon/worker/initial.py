"""Initial adaptation of a language (§3.2.4): its first adapter from D_t + S, no EWC, no earlier anchors.

S is the COMPASS selection from the pool guided by a usage proxy E_t (``proxy``); without a proxy the adapter is
trained on D_t alone (manifest kind "target_only"). The version is promoted with gate outcome "pass" (reason
"initial adaptation"), and its P_ref goes into the manifest and, when Redis is reachable, into Redis.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from compass.data import read_records
from compass.languages import LanguagesConfig
from daemon.worker.model import ModelHost
from daemon.worker.pipeline import JobContext, base_report, build_plan, train_and_register, write_report
from infra.settings import ServiceConfig

log = logging.getLogger(__name__)


def _records(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str | Path):
        return read_records(value)
    return list(value)


def adapt_language(
    config: ServiceConfig,
    languages: LanguagesConfig,
    lang: str,
    *,
    targets: str | Path | Sequence[Any],
    pool: str | Path | None = None,
    proxy: str | Path | Sequence[Any] | None = None,
    client: redis.Redis | None = None,
    model: Any = None,
    tokenizer: Any = None,
    codebook: Any = None,
    embedder: Any = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    host: ModelHost | None = None,
    plan_only: bool = False,
) -> dict[str, Any]:
    """Train, register and promote the first adapter of ``lang``; returns its job report (kind "initial").
    ``plan_only``: build the data plan (compass/adapt/plan.py) and return it, training and writing nothing."""
    from infra.embedders import make_embedder

    job_id = f"{lang}-initial-{int(time.time() * 1000)}-{uuid.uuid4().hex[:4]}"
    # a plan needs no model: only the embedder, the registry and the codebook
    ctx = JobContext(config, languages, client, host or (None if plan_only else ModelHost(config, model, tokenizer)),
                     embedder or make_embedder(config.embedder))
    if codebook is None and client is not None:
        from infra.codebook import CodebookNotFound, CodebookStore

        try:
            codebook = CodebookStore(config.consumer.codebook_dir, client, config.redis.key_prefix).load()
        except CodebookNotFound:
            log.warning("%s: no codebook published; P_ref has one bucket and no anchors are kept", lang)
    target = _records(targets)
    recent = _records(proxy)  # a proxy row with a response is labelled: a selection candidate (plan.py)
    if plan_only:
        planned = build_plan(ctx, lang, target=target, recent=recent, codebook=codebook, window_counts=None,
                             pool_path=Path(pool) if pool else None, use_current=False)
        return {**planned.plan.data, "selection": planned.plan.selection}
    report = base_report(job_id, lang, "initial", "initial", time.time())
    train_and_register(ctx, lang, job_id=job_id, target=target, recent=recent, codebook=codebook,
                       window_counts=None, report=report, pool_path=Path(pool) if pool else None, initial=True,
                       use_current=False, progress=progress)
    report["finished_at"] = time.time()
    write_report(ctx.work_dir, report)
    return report
