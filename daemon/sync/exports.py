"""Each promoted version written once as a PEFT directory ``serving.export_dir/LANG@VERSION`` for the targets to
load (the directory must be on a volume every target mounts at the same path).

A plain LoRA is written by ``export_peft`` (vLLM's layout). A version vLLM/SGLang refuse (DoRA) is written as it
is stored, for `compass serve` targets only (their loader takes DoRA); the export's refusal, which names the fix,
is kept for the LoRA-only kinds. Written into a temporary directory and renamed, so a target never reads half of
one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from compass.registry import AdapterRegistry
from compass.registry.export import ExportError, export_peft, peft_problems
from compass.registry.store import CONFIG, WEIGHTS


@dataclass(frozen=True)
class Exported:
    """Where version ``lang``/``version`` lies, and why vLLM/SGLang cannot load it (None: they can)."""

    path: Path
    lora_refusal: str | None


def export_for_serving(registry: AdapterRegistry, lang: str, version: str, root: Path) -> Exported:
    """The directory of ``lang``/``version`` under ``root``, written on first use. Raises the registry's error
    when the version cannot be read at all."""
    out = (Path(root) / f"{lang}@{version}").absolute()
    tensors, config, _ = registry.read_version(lang, version)
    refusal = None
    if peft_problems(config, tensors):
        try:  # it refuses before writing anything; its message names the fix
            export_peft(registry, lang, out.parent / ".never-written", version)
        except ExportError as e:
            refusal = str(e)
    if (out / CONFIG).is_file() and (out / WEIGHTS).is_file():
        return Exported(out, refusal)  # versions are immutable: what was written once stays right
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"
    try:
        if refusal is None:
            export_peft(registry, lang, tmp, version)
        else:  # as stored: compass serve's read_peft_dir + load_into take DoRA
            tmp.mkdir()
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS), metadata={"format": "pt"})
            (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / CONFIG).is_file():  # not another writer's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out, refusal)
