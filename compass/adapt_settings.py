"""Settings of adaptation as they appear in the service file: the base model (``model:``), where adapters live
(``adapters:``) and the worker's ``train:``, ``ecda:`` and ``gate:`` sections.

They sit beside ``compass/adapt/`` rather than inside it so that loading a config does not import torch and peft
(``compass.adapt`` imports them). ``TrainSettings`` and ``ECDASettings`` map onto ``compass.adapt.TrainConfig``
and ``ECDAConfig``, the dataclasses one update runs with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compass.validation import Frozen


class ModelConfig(Frozen):
    """The shared base causal LM: the worker trains per-language adapters on it, the router serves them."""

    path: Path | None = Field(
        None, description="a local transformers model directory (or the directory holding gguf_file); "
        "compass.adapt.packaged_model('smollm2') gives the packaged SmolLM2's directory and GGUF file"
    )
    gguf_file: str | None = Field(None, min_length=1, description="a GGUF file name inside path (needs `gguf`)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA when present), cpu or cuda")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="float32, bfloat16 or float16")


class AdaptersConfig(Frozen):
    """Where adapter versions live (compass/registry)."""

    registry: str = Field(".compass/adapters", min_length=1, description="a local directory or an fsspec URL "
                          "such as s3://bucket/adapters (needs the s3 extra)")


class TrainSettings(Frozen):
    """DoRA fine-tuning of one adapter (§4.3); maps onto compass.adapt.TrainConfig."""

    rank: int = Field(16, ge=1, le=1024, description="DoRA rank r, in [1, 1024] (§4.3: 16)")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator, >= 1")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names to adapt (attention + feed-forward) or 'all-linear'",
    )
    lr: float = Field(2e-4, gt=0, le=1.0, description="AdamW learning rate, in (0, 1] (§4.3: 2e-4)")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay, >= 0 (§4.3: 0.1)")
    max_epochs: int = Field(3, ge=1, le=100, description="at most this many epochs, in [1, 100] (§4.3: 3)")
    batch_size: int = Field(8, ge=1, le=4096, description="examples per step, in [1, 4096]")
    max_length: int = Field(128, ge=8, le=32768, description="tokens per example, in [8, 32768]")
    max_examples: int | None = Field(
        None, ge=1, description="cap on D_new per update: a seeded sample of the selected rows; D_t is always "
        "trained whole (null = no cap), >= 1"
    )
    seed: int = Field(0, description="seed of sampling, splits and dropout")


class ECDASettings(Frozen):
    """The ECDA loss of §3.3.3 (App. D.3-D.4 defaults)."""

    beta: float = Field(0.1, ge=0, description="weight of the anchor replay term, >= 0 (App. D.4: 0.1)")
    lam: float = Field(2.0, ge=0, description="EWC lambda, >= 0 (App. D.4: 2)")
    anchor_fraction: float = Field(0.05, gt=0, le=1, description="anchor buffer share of the data, in (0, 1]")
    anchor_batch_size: int | None = Field(
        None, ge=1, description="anchor rows in each step's single forward pass, >= 1; null = one pass over the "
        "anchor buffer per epoch (ceil(|B_anchor| / steps per epoch))"
    )


class GateSettings(Frozen):
    """The promotion gate: adaptation must improve, retention may degrade by at most ``retention_margin``."""

    retention_margin: float = Field(0.05, ge=0, le=1, description="max relative NLL rise on retention, in [0, 1]")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the recent window held out to score adaptation, in (0, 1)"
    )
    min_improvement: float = Field(0.0, ge=0, description="min relative NLL drop on adaptation, >= 0")
    holdout_from_targets: float = Field(
        0.0, ge=0, lt=1, description="share of D_t held out of training for the retention gate, split once at "
        "bootstrap and stored in the registry, in [0, 1) (0: D_t is trained whole, as the paper does)"
    )
    retention_dir: Path | None = Field(
        None, description="directory of per-language retention gate files <lang>.jsonl (records format), scored "
        "and never trained on; optional"
    )


class SelectionClusteringSettings(Frozen):
    """The clusters COMPASS selection fits per target on D_t ∪ E_t ∪ D_aux (§3.1.1, App. E model selection);
    maps onto compass.select.clusters.ClusteringConfig. The monitoring codebook is configured apart."""

    clusterer: Literal["kmeans", "hdbscan", "agglomerative", "butina"] = Field(
        "kmeans", description="kmeans (K by silhouette, 10 seeds), hdbscan (grid by DBCV), agglomerative (Ward) or "
        "butina (Taylor-Butina, adaptive threshold)"
    )
    params: dict[str, object] = Field(
        default_factory=dict, description="overrides of that clusterer's settings, e.g. {n_clusters: 20} or "
        "{dbcv: exact}; checked when the worker starts"
    )
