"""The record schema of compass's text data, read and written as JSONL and Parquet.

One record is one text in one language (a production query, a corpus utterance, a verse):

  field     type            required  meaning
  id        string          yes       unique within a file, non-empty
  lang      string          yes       language code, normalised by ``compass/langcodes.py`` ('und' allowed)
  text      string          yes       the text itself; must contain non-whitespace
  response  string | null   no        a reply to ``text`` (instruction data), null when there is none
  source    string          no        where the record comes from, e.g. 'chatterbot-corpus' (default '')
  topic     string | null   no        a topic label, e.g. a corpus category (default null)
  meta      object          no        free-form JSON metadata (default {})

JSONL (``.jsonl``, ``.jsonl.gz``): one JSON object per line; blank lines are ignored.
Parquet (``.parquet``): one column per field, all strings; ``meta`` is stored as a JSON string (a struct
or map column is accepted when reading). Validation reports every problem of a file at once, each naming
its place ("line 7, field 'text': ..." for JSONL, "row 7, ..." counting data rows from 1 for Parquet),
and raises one ``DataError``; ``read_records`` returns nothing unless the whole file is valid.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from compass import langcodes
from compass.errors import DataError

FIELDS = ("id", "lang", "text", "response", "source", "topic", "meta")
REQUIRED = ("id", "lang", "text")
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")

_MISSING_HINT = {
    "id": "every record needs a unique non-empty string id",
    "lang": "every record needs a language code such as 'en', 'sw' or 'und'",
    "text": "every record needs a non-empty text",
}


@dataclass(frozen=True)
class Record:
    """One validated record; ``lang`` is stored normalised (``'pt-BR'`` becomes ``'pt'``).

    Construction validates every field and raises ``ValueError`` naming each bad field.
    """

    id: str
    lang: str
    text: str
    response: str | None = None
    source: str = ""
    topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        clean, problems = check_fields({f: getattr(self, f) for f in FIELDS})
        if isinstance(self.meta, dict):
            try:
                json.dumps(self.meta, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as e:
                problems.append(f"field 'meta': not JSON-serialisable ({e}); use str, numbers, lists, dicts")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "lang", clean["lang"])

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict with the fields in schema order."""
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Record:
        """Validate a mapping (unknown keys are errors) and build a record; ``ValueError`` lists problems."""
        clean, problems = check_fields(obj)
        if problems:
            raise ValueError("; ".join(problems))
        return _trusted(clean)


def _trusted(clean: dict[str, Any]) -> Record:
    """A Record from fields ``check_fields`` already validated (skips re-validation on bulk reads)."""
    rec = object.__new__(Record)
    for name in FIELDS:
        object.__setattr__(rec, name, clean[name])
    return rec


@functools.lru_cache(maxsize=4096)
def _normalize_lang(value: str) -> str:
    return langcodes.normalize(value)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def check_fields(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Validate one record's fields; returns (clean fields, problems as "field 'F': ..." strings)."""
    problems: list[str] = []
    clean: dict[str, Any] = {"response": None, "source": "", "topic": None, "meta": {}}
    for key in obj:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"field {key!r}: unknown field{hint}; allowed fields are {', '.join(FIELDS)}"
            )
    for name in REQUIRED:
        value = obj.get(name)
        if name not in obj or value is None:
            problems.append(f"field {name!r}: missing; {_MISSING_HINT[name]}")
        elif not isinstance(value, str):
            problems.append(f"field {name!r}: expected a string, got {_type_name(value)} ({value!r:.40})")
        elif not value.strip():
            problems.append(f"field {name!r}: empty or only whitespace; {_MISSING_HINT[name]}")
        elif name == "lang":
            try:
                clean["lang"] = _normalize_lang(value)
            except ValueError:
                problems.append(
                    f"field 'lang': {value!r} is not a language code; use an ISO 639-1/639-3 code or BCP-47 "
                    "tag such as 'en', 'sw', 'pt-BR', or 'und' (see compass/langcodes.py)"
                )
        else:
            clean[name] = value
    for name in ("response", "topic"):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(
                f"field {name!r}: expected a string or null, got {_type_name(value)} ({value!r:.40})"
            )
        elif not value.strip():
            problems.append(f"field {name!r}: empty or only whitespace; use null when there is no {name}")
        else:
            clean[name] = value
    if "source" in obj:
        value = obj["source"]
        if isinstance(value, str):
            clean["source"] = value
        else:
            problems.append(f"field 'source': expected a string, got {_type_name(value)} ({value!r:.40})")
    if "meta" in obj:
        value = obj["meta"]
        if not isinstance(value, dict):
            problems.append(f"field 'meta': expected a JSON object, got {_type_name(value)} ({value!r:.40})")
        elif not all(isinstance(k, str) for k in value):
            problems.append("field 'meta': keys must be strings")
        else:
            clean["meta"] = value
    return clean, problems


# ------------------------------------------------------------------------------------------------- reading


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    got = "".join(path.suffixes) or "(none)"
    raise DataError(str(path), [f"unsupported file type {got!r}; use {', '.join(SUFFIXES)}"])


def iter_records(path: str | Path) -> Iterator[Record]:
    """Stream the valid records of a JSONL or Parquet file.

    Invalid lines are not yielded; after the last line one ``DataError`` lists every problem of the file.
    A consumer that must not act on a bad file uses ``read_records`` instead.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise DataError(str(path), ["file not found; pass an existing .jsonl or .parquet file"])
    problems: list[str] = []
    if suffix == ".parquet":
        yield from _iter_parquet(path, problems)
    else:
        yield from _iter_jsonl(path, problems)
    if problems:
        raise DataError(str(path), problems)


def read_records(path: str | Path) -> list[Record]:
    """All records of a JSONL / JSONL.gz / Parquet file, or ``DataError`` listing every problem."""
    return list(iter_records(path))


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _iter_jsonl(path: Path, problems: list[str]) -> Iterator[Record]:
    seen: dict[str, int] = {}
    with _open_binary(path) as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                rec = _parse_line(raw, lineno, problems, seen)
                if rec is not None:
                    yield rec
        except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
            problems.append(f"cannot read the file: {e}")


def _parse_line(raw: bytes, lineno: int, problems: list[str], seen: dict[str, int]) -> Record | None:
    where = f"line {lineno}"
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(
            f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "save the file as UTF-8"
        )
        return None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        problems.append(f"{where}: invalid JSON ({e.msg} at column {e.colno})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object per line, got {_type_name(obj)}")
        return None
    return _validated(obj, where, problems, seen, lineno)


def _validated(
    obj: Mapping[str, Any], where: str, problems: list[str], seen: dict[str, int], number: int
) -> Record | None:
    clean, found = check_fields(obj)
    rec_id = clean.get("id")
    if rec_id is not None:
        if rec_id in seen:
            unit = where.split()[0]
            found.append(
                f"field 'id': duplicate id {rec_id!r} (first on {unit} {seen[rec_id]}); "
                "ids must be unique within a file"
            )
        else:
            seen[rec_id] = number
    if found:
        problems.extend(f"{where}, {p}" for p in found)
        return None
    return _trusted(clean)


def _iter_parquet(path: Path, problems: list[str]) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        problems.append(f"not a readable Parquet file: {e}")
        return
    with pf:
        schema_problems = _check_columns(pf.schema_arrow)
        if schema_problems:
            problems.extend(schema_problems)
            return
        seen: dict[str, int] = {}
        offset = 0
        for batch in pf.iter_batches(batch_size=65536):
            yield from _rows(pa.Table.from_batches([batch]), offset, problems, seen)
            offset += batch.num_rows


def _check_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    problems = []
    for name in schema.names:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"column {name!r}: unknown field{hint}; allowed fields are {', '.join(FIELDS)}")
    for name in REQUIRED:
        if name not in schema.names:
            problems.append(f"column {name!r}: missing; {_MISSING_HINT[name]}")
    for name in FIELDS:
        if name not in schema.names:
            continue
        typ = schema.field(name).type
        ok = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)
        if name == "meta":
            ok = ok or pa.types.is_struct(typ) or pa.types.is_map(typ)
        if not ok:
            want = "string (JSON object), struct or map" if name == "meta" else "string"
            problems.append(f"column {name!r}: type {typ}, expected {want}")
    return problems


def _meta_value(value: Any) -> Any:
    """A meta cell as a Python value: JSON text parsed, map columns (lists of pairs) turned into dicts."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    return value


def _rows(table: Any, offset: int, problems: list[str], seen: dict[str, int]) -> Iterator[Record]:
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for i in range(table.num_rows):
        number = offset + i + 1
        where = f"row {number}"
        obj = {name: values[i] for name, values in columns.items()}
        # An absent optional value reads as null in Parquet: treat it like a missing key.
        for name in ("source", "meta"):
            if name in obj and obj[name] is None:
                del obj[name]
        if "meta" in obj:
            try:
                obj["meta"] = _meta_value(obj["meta"])
            except json.JSONDecodeError as e:
                problems.append(f"{where}, field 'meta': invalid JSON ({e.msg} at column {e.colno})")
                continue
        rec = _validated(obj, where, problems, seen, number)
        if rec is not None:
            yield rec


def records_from_arrow(table: Any, source: str = "<arrow table>") -> list[Record]:
    """Records of an Arrow table in the Parquet layout (all rows valid, or ``DataError`` naming each row)."""
    problems = _check_columns(table.schema)
    if problems:
        raise DataError(source, problems)
    records = list(_rows(table, 0, problems, {}))
    if problems:
        raise DataError(source, problems)
    return records


# ------------------------------------------------------------------------------------------------- writing


def _checked(records: Iterable[Record], path: Path) -> Iterator[Record]:
    """Records with unique ids, in order; anything else raises ``DataError`` before the file is replaced."""
    seen: dict[str, int] = {}
    for n, rec in enumerate(records, start=1):
        if not isinstance(rec, Record):
            raise DataError(str(path), [f"record {n}: expected a compass.data.Record, got {_type_name(rec)}"])
        if rec.id in seen:
            raise DataError(
                str(path),
                [f"record {n}, field 'id': duplicate id {rec.id!r} (first in record {seen[rec.id]}); "
                 "ids must be unique within a file"],
            )
        seen[rec.id] = n
        yield rec


def arrow_schema() -> Any:
    """The Parquet/Arrow layout of records: one string column per field, ``meta`` as JSON text."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(name, pa.string(), nullable=name in ("response", "topic")) for name in FIELDS],
        metadata={"compass.schema": "record/1"},
    )


def records_to_arrow(records: Iterable[Record]) -> Any:
    """An Arrow table of records in ``arrow_schema()``."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {name: [] for name in FIELDS}
    for rec in records:
        for name in FIELDS[:-1]:
            cols[name].append(getattr(rec, name))
        cols["meta"].append(json.dumps(rec.meta, ensure_ascii=False, separators=(",", ":")))
    return pa.table(cols, schema=arrow_schema())


def write_records(records: Iterable[Record], path: str | Path) -> int:
    """Write records to ``.jsonl``, ``.jsonl.gz`` or ``.parquet`` atomically; returns the count written."""
    path = Path(path)
    suffix = _suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = records_to_arrow(_checked(records, path))
            pq.write_table(table, tmp, compression="zstd")
            count = table.num_rows
        else:
            count = 0
            opener = gzip.open if suffix == ".jsonl.gz" else open
            with opener(tmp, "wt", encoding="utf-8", newline="\n") as fh:
                for rec in _checked(records, path):
                    fh.write(json.dumps(rec.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
                    count += 1
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
