"""Upcycle a dense decoder into per-language feed-forward experts, and route requests to them by language.

Each chosen decoder layer's ``mlp`` becomes a ``LanguageExperts`` holding deep copies of the dense MLP, one
"base" expert (index 0, every language that was not expanded) plus one per expanded language. The state-dict
keys become ``model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight`` (and ``mlp.router.weight`` in
top-k mode), which is the layout ``compass.expand.delta.expand_delta`` targets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compass import langcodes
from compass.expand.errors import ExpandError

BASE = "base"
SUPPORTED_ARCHS = ("LlamaForCausalLM", "Gemma3ForCausalLM")
MODES = ("hard", "topk")
_MLP_PROJ = ("gate_proj", "up_proj", "down_proj")
_SPEC_ATTR = "_compass_upcycle_spec"

Route = int | list[int]


@dataclass(frozen=True)
class UpcycleSpec:
    """What ``upcycle`` did, enough to rebuild the same layout on a fresh dense model (``load_expanded``)."""

    arch: str
    langs: tuple[str, ...]
    layers: tuple[int, ...]
    mode: str = "hard"
    top_k: int = 1
    expert_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "langs": list(self.langs), "layers": list(self.layers), "mode": self.mode,
                "top_k": self.top_k, "expert_names": list(self.expert_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpcycleSpec:
        need = ("arch", "langs", "layers", "mode", "top_k")
        missing = [k for k in need if k not in data]
        if missing:
            raise ExpandError(f"an upcycle spec must have the fields {list(need)}; missing {missing} in "
                              f"{sorted(data)}; write it with UpcycleSpec.to_dict()")
        langs = tuple(str(x) for x in data["langs"])
        names = tuple(str(x) for x in data.get("expert_names") or (BASE, *langs))
        if names != (BASE, *langs):
            raise ExpandError(f"spec expert_names must be ['base', *langs] = {[BASE, *langs]}; got {list(names)}; "
                              "rewrite the spec with UpcycleSpec.to_dict()")
        return cls(arch=str(data["arch"]), langs=langs, layers=tuple(int(i) for i in data["layers"]),
                   mode=str(data["mode"]), top_k=int(data["top_k"]), expert_names=names)


class LanguageExperts(nn.Module):
    """A decoder layer's feed-forward block as per-language experts (copies of the dense MLP).

    ``names[j]`` is the language expert ``j`` serves; ``names[0] == "base"``. In "hard" mode the expert is
    chosen by the route set with ``set_language`` (one index for the batch, or one per row). In "topk" mode a
    learned ``router`` gates each token over its top-k experts and the route is ignored.
    """

    def __init__(self, dense_mlp: nn.Module, langs: Sequence[str], *, mode: str = "hard", top_k: int = 1,
                 hidden_size: int | None = None):
        super().__init__()
        self.names: list[str] = [BASE, *langs]
        # Deep copies, so the experts never share storage with each other or with the caller's module.
        self.experts = nn.ModuleList(copy.deepcopy(dense_mlp) for _ in self.names)
        self.mode = mode
        self.top_k = top_k
        self.router: nn.Linear | None = None
        if mode == "topk":
            hidden = hidden_size or dense_mlp.gate_proj.in_features
            ref = dense_mlp.gate_proj.weight
            self.router = nn.Linear(hidden, len(self.names), bias=False, device=ref.device, dtype=ref.dtype)
            # Zero init: uniform gates at first; experts are identical copies, so any convex gate is the dense MLP.
            nn.init.zeros_(self.router.weight)
        self._route: Route = 0

    def index(self, lang: str | None) -> int:
        """The expert serving ``lang``: its own if it was expanded, otherwise the base expert (0)."""
        if lang is None or lang == BASE:
            return 0
        try:
            code = langcodes.normalize(lang)
        except ValueError:
            return 0
        return self.names.index(code) if code in self.names else 0

    def set_route(self, route: Route) -> None:
        self._route = route

    @property
    def route(self) -> Route:
        return self._route

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "topk":
            return self._forward_topk(x)
        route = self._route
        if isinstance(route, int):
            return self.experts[route](x)
        if len(route) != x.shape[0]:
            raise ExpandError(f"a per-row language list must have one entry per batch row ({x.shape[0]}); got "
                              f"{len(route)}; call set_language(model, langs) with len(langs) == batch size")
        if len(set(route)) == 1:
            return self.experts[route[0]](x)
        rows = torch.tensor(route, device=x.device)
        out: torch.Tensor | None = None
        for j in sorted(set(route)):
            sel = (rows == j).nonzero(as_tuple=True)[0]
            y = self.experts[j](x.index_select(0, sel))
            if out is None:
                out = y.new_zeros((x.shape[0], *y.shape[1:]))
            out = out.index_copy(0, sel, y)  # out of place: keeps autograd simple
        assert out is not None
        return out

    def _forward_topk(self, x: torch.Tensor) -> torch.Tensor:
        assert self.router is not None
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(flat).float(), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        # Renormalise over the chosen k so the gate is convex (keeps the dense function at initialisation).
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for j, expert in enumerate(self.experts):
            tok, slot = (chosen == j).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = expert(flat.index_select(0, tok)) * weights[tok, slot].unsqueeze(-1)
            out = out.index_add(0, tok, y)
        return out.reshape(shape)

    def extra_repr(self) -> str:
        return f"names={self.names}, mode={self.mode!r}, top_k={self.top_k}"


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    arch = type(model).__name__
    if arch not in SUPPORTED_ARCHS:
        raise ExpandError(f"upcycling needs one of {list(SUPPORTED_ARCHS)}; got {arch}; load the text-only causal "
                          "LM class of a supported family (e.g. Gemma3ForCausalLM, not the multimodal wrapper)")
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ExpandError(f"{arch} must hold its decoder layers at model.model.layers; got "
                          f"{type(layers).__name__}; pass an unwrapped transformers model")
    return layers


def _normalize_langs(langs: Sequence[str]) -> tuple[str, ...]:
    if isinstance(langs, str) or not langs:
        raise ExpandError(f"langs must be a non-empty list of language codes such as ['sw', 'yo']; got {langs!r}; "
                          "pass the languages to expand")
    out: list[str] = []
    for lang in langs:
        try:
            code = langcodes.normalize(lang)
        except ValueError as e:
            raise ExpandError(f"langs: {e}") from None
        if code in (BASE, langcodes.UNDETERMINED):
            raise ExpandError(f"langs must name real languages; got {lang!r}, which is reserved; drop it")
        if code in out:
            raise ExpandError(f"langs must be distinct; {lang!r} normalises to {code!r}, already listed; drop it")
        out.append(code)
    return tuple(out)


def upcycle(model: nn.Module, langs: Sequence[str], *, layers: Sequence[int] | None = None, mode: str = "hard",
            top_k: int = 1) -> UpcycleSpec:
    """Replace the MLP of ``layers`` (None = all decoder layers) by ``LanguageExperts`` for ``langs``, in place.

    The returned ``UpcycleSpec`` is also kept on the model (``get_spec``). Routing starts on the base expert.
    """
    decoder = _decoder_layers(model)
    arch = type(model).__name__
    if get_spec(model) is not None:
        raise ExpandError(f"{arch} must be dense to upcycle; it is already upcycled ({get_spec(model)}); "
                          "upcycle a fresh copy of the dense model")
    codes = _normalize_langs(langs)
    if mode not in MODES:
        raise ExpandError(f"mode must be one of {list(MODES)}; got {mode!r}; use 'hard' (route by language ID)")
    n_experts = len(codes) + 1
    if mode == "topk" and not 1 <= top_k <= n_experts:
        raise ExpandError(f"top_k must be in 1..{n_experts} (the number of experts); got {top_k}; lower it")
    if mode == "hard" and top_k != 1:
        raise ExpandError(f"top_k must be 1 in 'hard' mode (one expert per request); got {top_k}; "
                          "use mode='topk' for a learned router")
    n_layers = len(decoder)
    chosen = tuple(range(n_layers)) if layers is None else tuple(sorted({int(i) for i in layers}))
    bad = [i for i in chosen if not 0 <= i < n_layers]
    if not chosen or bad:
        raise ExpandError(f"layers must be decoder layer indices in 0..{n_layers - 1}; got {list(layers or [])} "
                          f"(bad: {bad}); pass valid indices or None for all layers")
    for i in chosen:
        mlp = decoder[i].mlp
        missing = [p for p in _MLP_PROJ if not isinstance(getattr(mlp, p, None), nn.Linear)]
        if missing:
            raise ExpandError(f"layer {i}'s mlp must have nn.Linear {list(_MLP_PROJ)}; {type(mlp).__name__} lacks "
                              f"{missing}; only gated MLPs (Llama, Gemma-3) can be upcycled")
    hidden = getattr(model.config, "hidden_size", None)
    for i in chosen:
        decoder[i].mlp = LanguageExperts(decoder[i].mlp, codes, mode=mode, top_k=top_k, hidden_size=hidden)
    spec = UpcycleSpec(arch=arch, langs=codes, layers=chosen, mode=mode, top_k=top_k,
                       expert_names=(BASE, *codes))
    setattr(model, _SPEC_ATTR, spec)
    return spec


def get_spec(model: nn.Module) -> UpcycleSpec | None:
    """The spec ``upcycle`` left on ``model``, or None for a dense model."""
    return getattr(model, _SPEC_ATTR, None)


def language_experts(model: nn.Module) -> list[tuple[str, LanguageExperts]]:
    """Every ``LanguageExperts`` in ``model`` with its module name, in layer order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LanguageExperts)]


def _require_upcycled(model: nn.Module) -> list[tuple[str, LanguageExperts]]:
    found = language_experts(model)
    if not found:
        raise ExpandError(f"{type(model).__name__} must be upcycled first (no LanguageExperts found); "
                          "call compass.expand.upcycle(model, langs)")
    return found


def set_language(model: nn.Module, lang: str | Sequence[str | None] | None) -> None:
    """Route the next forward passes: one language for the whole batch, or a list with one language per row.

    Languages that were not expanded (or None / unknown codes) go through the base expert.
    """
    for _, m in _require_upcycled(model):
        if lang is None or isinstance(lang, str):
            m.set_route(m.index(lang))
        else:
            m.set_route([m.index(x) for x in lang])


@contextmanager
def language(model: nn.Module, lang: str | Sequence[str | None] | None) -> Iterator[nn.Module]:
    """``with language(model, "sw"): model(...)``; restores the previous routes on exit."""
    found = _require_upcycled(model)
    before = [m.route for _, m in found]
    set_language(model, lang)
    try:
        yield model
    finally:
        for (_, m), route in zip(found, before, strict=True):
            m.set_route(route)


def expert_parameters(model: nn.Module, lang: str) -> dict[str, nn.Parameter]:
    """The parameters of ``lang``'s experts across all upcycled layers (``"base"`` for the base expert)."""
    found = _require_upcycled(model)
    names = found[0][1].names
    code = lang if lang == BASE else _lookup(lang, names)
    out: dict[str, nn.Parameter] = {}
    for mod_name, m in found:
        j = m.names.index(code)
        for pname, p in m.experts[j].named_parameters():
            out[f"{mod_name}.experts.{j}.{pname}"] = p
    return out


def _lookup(lang: str, names: list[str]) -> str:
    try:
        code = langcodes.normalize(lang)
    except ValueError:
        code = lang
    if code not in names:
        raise ExpandError(f"lang must be one of the model's experts {names}; got {lang!r}; "
                          "upcycle with that language or pick an expanded one")
    return code


def freeze_all_but(model: nn.Module, langs: Sequence[str], *, router: bool = False) -> list[str]:
    """Leave ``requires_grad`` only on ``langs``' experts (and the routers if ``router``); returns their names.

    CPT with this keeps the base expert and every shared weight (attention, norms, embeddings) intact.
    """
    if isinstance(langs, str):
        langs = [langs]
    keep: dict[str, nn.Parameter] = {}
    for lang in langs:
        keep.update(expert_parameters(model, lang))
    if router:
        for mod_name, m in language_experts(model):
            if m.router is not None:
                keep[f"{mod_name}.router.weight"] = m.router.weight
    ids = {id(p) for p in keep.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return sorted(keep)
