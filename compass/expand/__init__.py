"""Language expansion by PARAM-Delta: upcycle a dense decoder into per-language MoE experts, continue
pre-training only the new languages' experts, then graft the MoE-expanded post-training delta onto it.

Method (see ../shared/paper/paramdelta-moe-abstract.md):

1. ``upcycle`` replaces the feed-forward block (``mlp``) of chosen decoder layers with ``LanguageExperts``:
   N + 1 deep copies of the dense MLP. Expert 0 ("base") is the original MLP and serves every language that
   was not expanded; expert j serves the j-th expanded language. Attention, norms and embeddings stay shared.
   Right after upcycling the model computes exactly the dense function for every language.
2. CPT (``freeze_all_but``): only the new languages' experts train, so the base expert and every shared
   weight keep the original model's abilities bit for bit.
3. ``param_delta`` -> ``expand_delta`` -> ``graft``: Δ_post = θ_post − θ_base is mapped onto the MoE layout
   (every expert, base included, receives the dense MLP's delta; shared weights their own delta; a router,
   when present, none) and added to the CPT-enhanced MoE.

Choices where the abstract is silent, and why:

- Experts: one per expanded language plus one shared "base" expert (``names = ["base", *langs]``). Compass
  already keeps one adapter per language and runs a language ID on every request, so one expert per language
  reuses that key space; languages not expanded fall back to the untouched base expert.
- Layers: all decoder layers by default (``layers=None``); a subset can be given to trade capacity for
  memory (e.g. upper layers only). Total parameters grow by ``len(langs) * mlp_params`` per chosen layer.
- Router: ``mode="hard"`` (default) has no learned router; the request's language (compass's language ID)
  picks the expert for the whole sequence, set with ``set_language`` / ``language`` (per row for mixed
  batches). This keeps the other languages' computation identical to the dense model, makes CPT touch only
  the new experts, and costs one expert per token (same FLOPs as the dense model). ``mode="topk"`` adds a
  learned ``router`` (linear, no bias, top-k softmax renormalised over the chosen k) for callers that want
  token-level routing; because all experts start as identical copies, any convex gate keeps the dense
  function at initialisation.
- Supported architectures: ``LlamaForCausalLM`` and ``Gemma3ForCausalLM`` (decoder layers at
  ``model.model.layers``, each with ``mlp.{gate,up,down}_proj``); anything else raises ``ExpandError``.
- Baselines (``merge``): task arithmetic (θ_cpt + λΔ_post) and TIES-Merging (Yadav et al. 2023).
"""

from compass.expand.delta import check_compatible, expand_delta, param_delta, post_state_from_peft
from compass.expand.errors import ExpandError
from compass.expand.graft import graft
from compass.expand.io import active_parameters, load_expanded, save_expanded, total_parameters
from compass.expand.merge import task_arithmetic, ties_merge
from compass.expand.upcycle import (
    BASE,
    SUPPORTED_ARCHS,
    LanguageExperts,
    UpcycleSpec,
    expert_parameters,
    freeze_all_but,
    get_spec,
    language,
    language_experts,
    set_language,
    upcycle,
)

__all__ = [
    "BASE",
    "SUPPORTED_ARCHS",
    "ExpandError",
    "LanguageExperts",
    "UpcycleSpec",
    "active_parameters",
    "check_compatible",
    "expand_delta",
    "expert_parameters",
    "freeze_all_but",
    "get_spec",
    "graft",
    "language",
    "language_experts",
    "load_expanded",
    "param_delta",
    "post_state_from_peft",
    "save_expanded",
    "set_language",
    "task_arithmetic",
    "ties_merge",
    "total_parameters",
    "upcycle",
]
