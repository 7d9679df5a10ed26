"""Text inputs of language expansion and their evaluation.

``--data`` names either a directory of records files, one per language (``<lang>.jsonl``, ``.jsonl.gz`` or
``.parquet``, compass.data's record layout; the file name gives the key), or ``key=path`` pairs (one records file
each). A record's text is ``text``, or ``text + "\\n" + response`` when it has a response (a conversation turn).
The key is a language code, or any label of an evaluation-only set (e.g. ``chat``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compass.data import SUFFIXES, read_records
from compass.expand.errors import ExpandError
from compass.expand.upcycle import language  # a key with no expert (not expanded, 'chat') goes to the base one


def record_text(text: str, response: str | None) -> str:
    """The raw training text of one record."""
    return text if response is None else f"{text}\n{response}"


def read_texts(path: str | Path) -> list[str]:
    """The texts of one records file, in file order."""
    return [record_text(r.text, r.response) for r in read_records(path)]


def _files(data: Sequence[str | Path]) -> dict[str, Path]:
    """key -> records file, from one directory or from ``key=path`` pairs."""
    if len(data) == 1 and "=" not in str(data[0]) and Path(data[0]).is_dir():
        root = Path(data[0])
        out: dict[str, Path] = {}
        for f in sorted(root.iterdir()):
            suffix = next((s for s in SUFFIXES if f.name.endswith(s)), None)
            if f.is_file() and suffix:
                key = f.name[: -len(suffix)]
                if key in out:
                    raise ExpandError(f"--data {root}: two files for {key!r} ({out[key].name}, {f.name}); fix: keep "
                                      "one records file per language")
                out[key] = f
        if not out:
            raise ExpandError(f"--data {root}: no records file (<lang>{'|'.join(SUFFIXES)}) in it; fix: write one "
                              "records file per language, e.g. sw.jsonl")
        return out
    out = {}
    for item in data:
        key, sep, path = str(item).partition("=")
        if not sep or not key or not path:
            raise ExpandError(f"--data {item!r} is neither a directory nor a lang=path pair; fix: pass a directory "
                              "of <lang>.jsonl files or pairs like sw=data/sw.jsonl")
        if key in out:
            raise ExpandError(f"--data names {key!r} twice; fix: one file per language")
        if not Path(path).is_file():
            raise ExpandError(f"--data {key}={path}: no such file; fix: give an existing records file")
        out[key] = Path(path)
    return out


def load_texts(data: Sequence[str | Path], keys: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Texts per key from ``--data`` inputs; with ``keys`` only those keys are read (missing ones are absent)."""
    files = _files(data)
    wanted = files if keys is None else {k: files[k] for k in keys if k in files}
    return {k: read_texts(p) for k, p in wanted.items()}


def split_heldout(texts_by_lang: Mapping[str, Sequence[str]], share: float = 0.1, seed: int = 0,
                  ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, held-out) per key: a seeded random ``share`` of each key's texts (at least one when it has two or
    more; none when it has one) is held out. The split of a key does not depend on the other keys."""
    if not 0 < share < 1:
        raise ExpandError(f"split_heldout: share must be in (0, 1); got {share!r}; fix: e.g. 0.1")
    train: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for k, texts in texts_by_lang.items():
        n = len(texts)
        n_held = 0 if n < 2 else max(1, math.floor(n * share))
        g = torch.Generator().manual_seed(seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(k)) % 2**31)
        perm = torch.randperm(n, generator=g).tolist()
        held_idx = set(perm[:n_held])
        held[k] = [texts[i] for i in range(n) if i in held_idx]
        train[k] = [texts[i] for i in range(n) if i not in held_idx]
    return train, held


@torch.no_grad()
def nll_by_lang(model: nn.Module, texts_by_lang: Mapping[str, Sequence[str]], tokenizer: Any, moe: bool, *,
                batch_size: int = 8, max_length: int = 128) -> dict[str, float]:
    """Token-weighted mean next-token NLL (nats) per key. ``moe``: each key's texts go to its language's expert
    when the model has one, else to the base expert (languages that were not expanded, evaluation-only sets)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        for key, texts in texts_by_lang.items():
            total, count = 0.0, 0
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                                padding_side="right", return_tensors="pt")
                ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                if moe:
                    with language(model, key):
                        logits = model(input_ids=ids, attention_mask=mask).logits
                else:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                # real next tokens predicted from a real token (either padding side)
                target = ids[:, 1:]
                keep = (mask[:, 1:] * mask[:, :-1]).bool()
                nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), target,
                                                        reduction="none")
                total += float(nll[keep].sum())
                count += int(keep.sum())
            out[key] = total / count if count else float("nan")
    finally:
        model.train(was_training)
    return out
