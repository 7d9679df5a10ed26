"""chatterbot-corpus 1.3.3 as records: one record per user utterance of each conversation.

Layout: ``chatterbot_corpus/data/<language>/<category>.yml`` with ``conversations: [[turn, turn, ...]]``.
  lang      the folder's language through ``langcodes.normalize`` ('english' -> 'en'); the folders
            ``traditionalchinese`` and ``hinglish`` map to ``zh`` and ``hi`` (their BCP-47 tags zh-Hant and
            hi-Latn are kept in ``meta['tag']`` and in the ids).
  topic     the file name without ``.yml`` (``ai``, ``food``, ``greetings``, ...), exactly as in the corpus.
  text      turns 1, 3, 5, ... of a conversation (the user's side; the bot answers turns 2, 4, ...).
  response  the turn after it, or null for a final unanswered utterance.
  id        ``cb:<tag>:<topic>:<conversation>:<turn>``, conversation and turn counted from 1 in the file.
  meta      {"file", "conversation", "turn", "line"} (+ "tag" for the two variant folders).

Scalars are read as text (YAML's BaseLoader), so answers such as ``yes`` or ``1984`` stay strings.
Files that are not valid YAML, and conversations that are not lists of non-empty strings (the corpus has
a few, e.g. ``ukrainian/history.yml`` conversation 1), are skipped, logged and listed in
``CorpusLoad.skipped``; they never stop the load.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from compass import langcodes
from compass.corpora.fetch import fetch
from compass.data import Record

log = logging.getLogger(__name__)

SOURCE = "chatterbot-corpus"
_PREFIX = "chatterbot_corpus/data/"
# Folders whose name is not an English language name: folder -> BCP-47 tag.
_FOLDER_TAGS = {"traditionalchinese": "zh-Hant", "hinglish": "hi-Latn"}
_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


@dataclass(frozen=True)
class Skipped:
    """A file or conversation left out, with why: ``file`` is ``<language>/<topic>.yml``."""

    file: str
    reason: str


@dataclass(frozen=True)
class CorpusLoad:
    records: list[Record]
    skipped: list[Skipped] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file read, as <language>/<topic>.yml

    def counts(self) -> dict[str, int]:
        """Records per language code."""
        return dict(Counter(r.lang for r in self.records))


def folder_tag(folder: str) -> str:
    """The BCP-47 tag of a language folder; ``ValueError`` when the folder names no known language."""
    return _FOLDER_TAGS.get(folder) or langcodes.normalize(folder)


def load(languages: Sequence[str] | None = None, source: str | Path | None = None) -> CorpusLoad:
    """Records of the corpus, optionally only for ``languages`` (codes in any form ``normalize`` accepts).

    ``source`` is the wheel, or a directory laid out as ``<language>/<topic>.yml``; by default the cached
    wheel (downloaded on first use).
    """
    wanted = None if languages is None else {langcodes.normalize(x) for x in languages}
    records: list[Record] = []
    skipped: list[Skipped] = []
    files: list[str] = []
    seen_langs: set[str] = set()
    for rel, read in _files(Path(source) if source else fetch("chatterbot")):
        folder, topic = rel.split("/")[0], PurePosixPath(rel).stem
        try:
            tag = folder_tag(folder)
        except ValueError:
            _skip(skipped, rel, f"folder {folder!r} names no known language; file skipped")
            continue
        lang = langcodes.normalize(tag)
        seen_langs.add(lang)
        if wanted is not None and lang not in wanted:
            continue
        files.append(rel)
        for conv, line, turns in _conversations(rel, read(), skipped):
            for t in range(0, len(turns), 2):
                meta: dict[str, object] = {"file": rel, "conversation": conv, "turn": t + 1, "line": line}
                if tag != lang:
                    meta["tag"] = tag
                records.append(Record(
                    id=f"cb:{tag}:{topic}:{conv}:{t + 1}", lang=lang, text=turns[t],
                    response=turns[t + 1] if t + 1 < len(turns) else None,
                    source=SOURCE, topic=topic, meta=meta,
                ))
    if wanted is not None and wanted - seen_langs:
        log.warning("chatterbot-corpus has no data for %s", ", ".join(sorted(wanted - seen_langs)))
    return CorpusLoad(records, skipped, files)


def _skip(skipped: list[Skipped], rel: str, reason: str) -> None:
    log.warning("chatterbot-corpus %s: %s", rel, reason)
    skipped.append(Skipped(rel, reason))


def _files(source: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(``<language>/<topic>.yml``, reader of its bytes) for every corpus file, sorted."""
    if source.is_dir():
        root = source / _PREFIX if (source / _PREFIX).is_dir() else source
        for path in sorted(root.glob("*/*.yml")):
            yield f"{path.parent.name}/{path.name}", path.read_bytes
        return
    if not zipfile.is_zipfile(source):
        raise ValueError(f"{source} is neither a chatterbot-corpus wheel nor a directory of <language>/*.yml")
    with zipfile.ZipFile(source) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(_PREFIX) and n.endswith(".yml"))
        for name in names:
            rel = name[len(_PREFIX):]
            if rel.count("/") == 1:
                yield rel, (lambda name=name: zf.read(name))


def _conversations(rel: str, data: bytes, skipped: list[Skipped]) -> Iterator[tuple[int, int, list[str]]]:
    """(conversation number, line, turns) of the valid conversations of one file."""
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=_Loader)
    except UnicodeDecodeError as e:
        _skip(skipped, rel, f"not valid UTF-8 at byte {e.start}; file skipped")
        return
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        _skip(skipped, rel, f"invalid YAML{where} ({getattr(e, 'problem', None) or e}); file skipped")
        return
    convs = None
    if isinstance(root, yaml.MappingNode):
        convs = next((v for k, v in root.value if k.value == "conversations"), None)
    if not isinstance(convs, yaml.SequenceNode):
        _skip(skipped, rel, "no 'conversations:' list at the top level; file skipped")
        return
    for n, node in enumerate(convs.value, start=1):
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.SequenceNode):
            shown = node.value if isinstance(node, yaml.ScalarNode) else type(node).__name__
            _skip(skipped, rel, f"conversation {n} (line {line}) is not a list of turns "
                                f"(got {str(shown)[:60]!r}); conversation skipped")
            continue
        bad = [i for i, t in enumerate(node.value, start=1)
               if not isinstance(t, yaml.ScalarNode) or not t.value.strip()]
        if bad or not node.value:
            _skip(skipped, rel, f"conversation {n} (line {line}): turn {bad[0] if bad else 1} is not a "
                                "non-empty string; conversation skipped")
            continue
        yield n, line, [t.value for t in node.value]
