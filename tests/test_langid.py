"""Language ID on real text with the bundled py3langid model, and on a real fastText-format model file."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from compass import langcodes
from compass.config import LangIdConfig, load_languages
from compass.errors import LanguageIdError
from compass.langid import FastTextIdentifier, Identification, LanguageIdentifier, make_identifier

# Hand-written natural sentences, one per language (8+ words each).
SENTENCES = {
    "en": "The weather was so pleasant yesterday that we decided to walk to the market.",
    "es": "Mañana por la mañana vamos a visitar a mis abuelos en el pueblo.",
    "fr": "Nous avons passé tout l'après-midi à discuter de nos projets de vacances.",
    "de": "Ich habe gestern Abend ein sehr interessantes Buch über die Geschichte Berlins gelesen.",
    "it": "Ieri sera siamo andati al cinema a vedere un film molto divertente.",
    "pt": "Amanhã de manhã vamos visitar os meus avós que moram no interior.",
    "ru": "Вчера вечером мы долго гуляли по парку и разговаривали о жизни.",
    "ar": "ذهبت إلى السوق صباح اليوم لشراء الخضروات والفواكه الطازجة لعائلتي.",
    "zh": "我们明天早上要去图书馆借几本关于历史的书，然后一起吃午饭。",
    "ja": "昨日は友達と一緒に新しいレストランで美味しい昼ご飯を食べました。",
    "ko": "어제 저녁에 친구들과 함께 새로 생긴 식당에서 맛있는 저녁을 먹었어요.",
    "hi": "कल शाम हम सब परिवार के साथ बाज़ार गए और बहुत सारी चीज़ें खरीदीं।",
    "sw": "Jana jioni tulikwenda sokoni kununua matunda na mboga kwa ajili ya chakula cha jioni.",
    "yo": "Mo fẹ́ lọ sí ọjà lọ́la láti ra oúnjẹ fún àwọn ọmọ mi àti ìyàwó mi.",
    "am": "ትናንት ማታ ከጓደኞቼ ጋር ወደ ገበያ ሄደን ብዙ ነገሮችን ገዛን።",
    "ne": "हामी भोलि बिहान काठमाडौंबाट पोखरा जाने योजना बनाउँदैछौं र त्यहाँ दुई दिन बस्नेछौं।",
    "ha": "Jiya da yamma mun je kasuwa domin sayen abinci da kayan marmari ga iyalinmu.",
    "ig": "Anyị gara ahịa ụnyaahụ ịzụta nri na akwụkwọ nri maka ezinụlọ anyị.",
    "nl": "Gisteren zijn we met de hele familie naar het strand gefietst.",
    "sv": "Igår kväll lagade vi middag tillsammans och pratade om semestern.",
    "tr": "Dün akşam arkadaşlarımla birlikte yeni açılan restoranda yemek yedik.",
    "uk": "Учора ввечері ми довго гуляли парком і розмовляли про майбутнє.",
    "fa": "دیروز عصر با دوستانم به پارک رفتیم و درباره آینده صحبت کردیم.",
    "he": "אתמול בערב הלכנו עם כל המשפחה לטייל על שפת הים.",
    "id": "Kemarin sore kami pergi ke pasar untuk membeli sayur dan buah segar.",
    "th": "เมื่อวานตอนเย็นเราไปเดินเล่นที่สวนสาธารณะกับครอบครัว",
    "ur": "کل شام ہم سب گھر والوں کے ساتھ بازار گئے اور بہت سی چیزیں خریدیں۔",
    "mr": "काल संध्याकाळी आम्ही सगळे मित्र मिळून नवीन चित्रपट पाहायला गेलो होतो.",
    "ta": "நேற்று மாலை நாங்கள் குடும்பத்துடன் கடற்கரைக்குச் சென்று நீண்ட நேரம் பேசினோம்.",
    "te": "నిన్న సాయంత్రం మేము మా కుటుంబంతో కలిసి సినిమాకు వెళ్ళాము.",
}
CONFIGURED = sorted(load_languages().enabled)


@pytest.mark.parametrize(
    ("label", "code"),
    [("arz", "ar"), ("ary", "ar"), ("arb_Arab", "ar"), ("yue", "zh"), ("wuu", "zh"), ("cmn_Hani", "zh"),
     ("swh_Latn", "sw"), ("uzs", "uz"), ("kik", "ki"), ("zxx", "und"), ("zxx_Zxxx", "und"), ("hbo", "hbo"),
     ("eng_Latn", "en"), ("Oriya", "or"), ("nan", "nan")],
)
def test_language_id_labels_fold_onto_compass_codes(label, code):
    assert langcodes.normalize(label) == code


@pytest.fixture(scope="module")
def unrestricted() -> LanguageIdentifier:
    return make_identifier(LangIdConfig(restrict_to_configured=False))


@pytest.fixture(scope="module")
def configured() -> LanguageIdentifier:
    return make_identifier(LangIdConfig())  # restricted to configs/languages.yaml's enabled languages


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_each_sentence_gets_its_language(unrestricted, lang):
    got = unrestricted.identify(SENTENCES[lang])
    assert got.lang == lang
    assert 0.5 <= got.confidence <= 1.0


def test_configured_languages_are_the_restriction_set_and_answer_correctly(configured):
    assert configured.backend == "py3langid"
    assert sorted(configured.languages) == CONFIGURED  # every configured language is one py3langid knows
    covered = [lang for lang in CONFIGURED if lang in SENTENCES]
    assert covered
    assert {lang: configured.identify(SENTENCES[lang]).lang for lang in covered} == {c: c for c in covered}


def test_restriction_answers_within_the_set():
    ident = make_identifier(LangIdConfig(), languages=["en", "Portuguese"])  # any form normalize accepts
    assert ident.languages == frozenset({"en", "pt"})
    got = ident.identify(SENTENCES["es"])
    assert got.lang == "pt"
    assert got.confidence > 0.9
    # text without language stays undetermined even inside a restriction set (py3langid's 'zxx' class)
    assert ident.identify("123 456").lang == "und"


def test_restricting_one_identifier_leaves_others_unchanged(unrestricted):
    before = unrestricted.identify(SENTENCES["es"])
    make_identifier(LangIdConfig(), languages=["en", "pt"])  # py3langid's set_languages mutates an instance
    assert unrestricted.identify(SENTENCES["es"]) == before
    assert before.lang == "es"


def test_restriction_ignores_und_and_duplicates():
    ident = make_identifier(LangIdConfig(), languages=["sw", "swa", "Swahili", "und", "yo"])
    assert ident.languages == frozenset({"sw", "yo"})


def test_restriction_language_the_backend_lacks_is_named():
    with pytest.raises(LanguageIdError) as err:
        make_identifier(LangIdConfig(), languages=["en", "haw"])
    assert "cannot identify 'haw'" in str(err.value)
    assert "langid.restrict_to_configured" in str(err.value)


def test_invalid_restriction_code_is_named():
    with pytest.raises(LanguageIdError, match="'x!'"):
        make_identifier(LangIdConfig(), languages=["en", "x!"])


def test_below_threshold_is_und_with_the_best_confidence():
    strict = make_identifier(LangIdConfig(restrict_to_configured=False, min_confidence=0.99))
    russian = strict.identify(SENTENCES["ru"])  # ru 0.81, bg/mk share the rest
    assert russian.lang == "und"
    assert round(russian.confidence, 2) == 0.81
    assert strict.identify("ok").lang == "und"
    assert strict.identify(SENTENCES["de"]).lang == "de"  # confident enough


def test_digits_only_is_und(unrestricted):
    got = unrestricted.identify("123 456")
    assert got.lang == "und"
    assert got.confidence < 0.5


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_und_zero(unrestricted, text):
    assert unrestricted.identify(text) == Identification("und", 0.0)


def test_batch_gives_the_per_item_results(unrestricted):
    texts = [SENTENCES["sw"], "", SENTENCES["am"], "123 456", SENTENCES["ne"], SENTENCES["yo"]]
    batch = unrestricted.identify_batch(texts)
    assert batch == [unrestricted.identify(t) for t in texts]
    assert [b.lang for b in batch] == ["sw", "und", "am", "und", "ne", "yo"]
    assert unrestricted.identify_batch(iter([])) == []


def test_non_text_is_a_type_error(unrestricted):
    with pytest.raises(TypeError, match="needs a str"):
        unrestricted.identify(b"bytes")


# ------------------------------------------------------------------------------ fastText-format model file
# A real model file in fastText's binary format (FastText::saveModel: magic + version, Args::save,
# Dictionary::save, quant flag + DenseMatrix::save for input, qout flag + DenseMatrix::save for output),
# read by fasttext-predict's C++ loader. Supervised, softmax loss, no subwords or word n-grams, so
# P(label) = softmax(output @ mean(input rows of the words and '</s>')) and can be computed by hand.

LABELS = ["__label__eng_Latn", "__label__swh_Latn", "__label__swc_Latn", "__label__fra_Latn"]
WORDS = {"</s>": None, "hello": 0, "world": 0, "the": 0, "habari": 1, "jambo": 1, "sasa": 2, "bonjour": 3}
SCALE = 10.0


def write_fasttext_model(path: Path) -> Path:
    dim = len(LABELS)
    out = bytearray(struct.pack("<ii", 793712314, 12))  # FASTTEXT_FILEFORMAT_MAGIC_INT32, FASTTEXT_VERSION
    # dim ws epoch minCount neg wordNgrams loss(softmax=3) model(sup=3) bucket minn maxn lrUpdateRate, t
    out += struct.pack("<12id", dim, 5, 5, 1, 5, 1, 3, 3, 0, 0, 0, 100, 1e-4)
    entries = [(w, 0) for w in WORDS] + [(lab, 1) for lab in LABELS]  # entry_type word=0, label=1
    out += struct.pack("<iiiqq", len(entries), len(WORDS), len(LABELS), 1000, -1)  # pruneidx_size -1
    for word, kind in entries:
        out += word.encode() + b"\0" + struct.pack("<qb", 10, kind)
    inp = np.zeros((len(WORDS), dim), dtype="<f4")
    for row, label in enumerate(WORDS.values()):
        if label is not None:
            inp[row, label] = SCALE  # each word votes for one label; '</s>' is a zero row
    outp = np.eye(len(LABELS), dim, dtype="<f4")
    out += struct.pack("<?", False) + struct.pack("<qq", *inp.shape) + inp.tobytes()
    out += struct.pack("<?", False) + struct.pack("<qq", *outp.shape) + outp.tobytes()
    path.write_bytes(bytes(out))
    return path


def softmax(logits: list[float]) -> list[float]:
    z = sum(math.exp(v) for v in logits)
    return [math.exp(v) / z for v in logits]


@pytest.fixture(scope="module")
def ft_model(tmp_path_factory) -> Path:
    return write_fasttext_model(tmp_path_factory.mktemp("ft") / "tiny-glotlid.bin")


def ft_config(path: Path, **kw) -> LangIdConfig:
    return LangIdConfig(backend="fasttext", model_path=path, restrict_to_configured=False, **kw)


def test_fasttext_model_labels_map_onto_compass_codes(ft_model):
    ident = make_identifier(ft_config(ft_model))
    assert isinstance(ident, FastTextIdentifier)
    assert ident.backend == "fasttext"
    assert ident.languages == frozenset({"en", "sw", "fr"})  # swh_Latn and swc_Latn both fold into sw


def test_fasttext_probabilities_are_the_models(ft_model):
    ident = make_identifier(ft_config(ft_model))
    got = ident.identify("hello world")  # hidden = (10 e_eng + 10 e_eng + 0) / 3
    p = softmax([20 / 3, 0, 0, 0])
    assert got.lang == "en"
    assert got.confidence == pytest.approx(p[0], abs=1e-4)
    got = ident.identify("bonjour\nbonjour the")  # a newline is whitespace here, not a second line
    assert got.lang == "fr"
    assert got.confidence == pytest.approx(softmax([10 / 4, 0, 0, 20 / 4])[3], abs=1e-4)


def test_fasttext_labels_of_one_language_add_up(ft_model):
    ident = make_identifier(ft_config(ft_model, min_confidence=0.3))
    # eng and swh tie; sw wins only because swc's share is added to swh's
    got = ident.identify("hello habari")
    p = softmax([10 / 3, 10 / 3, 0, 0])
    assert got == Identification("sw", pytest.approx(p[1] + p[2], abs=1e-4))
    assert got.confidence == pytest.approx(0.5, abs=1e-4)


def test_fasttext_restriction_renormalises_within_the_set(ft_model):
    ident = make_identifier(LangIdConfig(backend="fasttext", model_path=ft_model), languages=["en", "fr"])
    assert ident.languages == frozenset({"en", "fr"})
    got = ident.identify("habari hello hello")  # logits eng 5, swh 2.5; only eng and fra are allowed
    assert got.lang == "en"
    assert got.confidence == pytest.approx(math.exp(5) / (math.exp(5) + 1), abs=1e-4)
    with pytest.raises(LanguageIdError, match="cannot identify 'yo'"):
        make_identifier(LangIdConfig(backend="fasttext", model_path=ft_model), languages=["en", "yo"])


def test_fasttext_unknown_words_and_empty_text_are_und(ft_model):
    ident = make_identifier(ft_config(ft_model, min_confidence=0.6))
    got = ident.identify("xyzzy plugh")  # only '</s>': uniform over 4 labels, sw holds 2 of them
    assert got == Identification("und", pytest.approx(0.5, abs=1e-4))
    assert ident.identify("  ") == Identification("und", 0.0)
    assert ident.identify_batch(["hello", "", "jambo"]) == [
        ident.identify("hello"), Identification("und", 0.0), ident.identify("jambo")
    ]
    assert [r.lang for r in ident.identify_batch(["hello", "jambo"])] == ["en", "sw"]


def test_missing_fasttext_model_names_path_and_key(tmp_path):
    missing = tmp_path / "nowhere" / "model.bin"
    with pytest.raises(LanguageIdError) as err:
        make_identifier(ft_config(missing))
    assert str(missing) in str(err.value)
    assert "langid.model_path" in str(err.value)


def test_corrupt_fasttext_model_is_a_language_id_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"this is not a fastText model")
    with pytest.raises(LanguageIdError, match="cannot load fastText model .*langid.model_path"):
        make_identifier(ft_config(bad))
