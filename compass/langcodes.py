"""The one language-code scheme compass uses everywhere: config keys, language ID, records, Kafka keys.

A language is written as its lowercase ISO 639-1 code where one exists (``en``, ``sw``, ``yo``) and as its
ISO 639-3 code otherwise (``ceb``, ``fil``). Region and script subtags of a BCP-47 tag are dropped, so
``pt-BR`` and ``zh-Hant`` both address the ``pt`` / ``zh`` adapter. ``und`` (ISO 639-2 "undetermined")
marks text whose language could not be identified with enough confidence.

``normalize`` also accepts ISO 639-3 / 639-2 codes and English names for the languages in ``LANGUAGES``
(``swa``, ``Swahili``, ``eng``) so data from corpora that name languages differently maps onto one key.
Individual languages of an ISO 639-3 macrolanguage fold into the macrolanguage's code (``arz``/``ary``
Egyptian/Moroccan Arabic -> ``ar``, ``cmn``/``yue``/``wuu`` -> ``zh``, ``swh`` -> ``sw``, ``npi`` -> ``ne``),
because language-ID models split these finely while compass keeps one adapter per macrolanguage.
``zxx`` ("no linguistic content", a class of some language-ID models) maps to ``und``.
"""

from __future__ import annotations

import re

UNDETERMINED = "und"

# code -> (ISO 639-3, English name). Covers py3langid's languages and the corpora's languages.
_TABLE = """
af afr Afrikaans|am amh Amharic|an arg Aragonese|ar ara Arabic|as asm Assamese|az aze Azerbaijani
be bel Belarusian|bg bul Bulgarian|bn ben Bengali|br bre Breton|bs bos Bosnian|ca cat Catalan
cs ces Czech|cy cym Welsh|da dan Danish|de deu German|dz dzo Dzongkha|el ell Greek|en eng English
eo epo Esperanto|es spa Spanish|et est Estonian|eu eus Basque|fa fas Persian|fi fin Finnish
fo fao Faroese|fr fra French|ga gle Irish|gl glg Galician|gu guj Gujarati|ha hau Hausa|he heb Hebrew
hi hin Hindi|hr hrv Croatian|ht hat Haitian|hu hun Hungarian|hy hye Armenian|id ind Indonesian
ig ibo Igbo|is isl Icelandic|it ita Italian|ja jpn Japanese|jv jav Javanese|ka kat Georgian
kk kaz Kazakh|km khm Khmer|kn kan Kannada|ko kor Korean|ku kur Kurdish|ky kir Kyrgyz|la lat Latin
lb ltz Luxembourgish|lo lao Lao|lt lit Lithuanian|lv lav Latvian|mg mlg Malagasy|mk mkd Macedonian
ml mal Malayalam|mn mon Mongolian|mr mar Marathi|ms msa Malay|mt mlt Maltese|my mya Burmese
nb nob Norwegian Bokmal|ne nep Nepali|nl nld Dutch|nn nno Norwegian Nynorsk|no nor Norwegian
oc oci Occitan|or ori Odia|pa pan Punjabi|pl pol Polish|ps pus Pashto|pt por Portuguese|qu que Quechua
ro ron Romanian|ru rus Russian|rw kin Kinyarwanda|se sme Northern Sami|si sin Sinhala|sk slk Slovak
sl slv Slovenian|so som Somali|sq sqi Albanian|sr srp Serbian|sv swe Swedish|sw swa Swahili|ta tam Tamil
te tel Telugu|th tha Thai|tl tgl Tagalog|tr tur Turkish|ug uig Uyghur|uk ukr Ukrainian|ur urd Urdu
uz uzb Uzbek|vi vie Vietnamese|vo vol Volapuk|wa wln Walloon|xh xho Xhosa|yo yor Yoruba|zh zho Chinese
zu zul Zulu|ba bak Bashkir|bo bod Tibetan|ff ful Fulah|fy fry Western Frisian|gd gla Scottish Gaelic
gn grn Guarani|ki kik Kikuyu|lg lug Ganda|ln lin Lingala|om orm Oromo|sa san Sanskrit|sn sna Shona
st sot Southern Sotho|tg tgk Tajik|tk tuk Turkmen|tt tat Tatar|yi yid Yiddish
"""

LANGUAGES: dict[str, tuple[str, str]] = {}
for _entry in _TABLE.replace("\n", "|").split("|"):
    if _entry.strip():
        _code, _iso3, _name = _entry.split(maxsplit=2)
        LANGUAGES[_code] = (_iso3, _name)

# ISO 639-2/B and other common aliases that differ from the 639-3 code above.
_ALIASES = {
    "ger": "de", "fre": "fr", "chi": "zh", "per": "fa", "dut": "nl", "cze": "cs", "gre": "el", "arm": "hy",
    "geo": "ka", "ice": "is", "mac": "mk", "may": "ms", "rum": "ro", "slo": "sk", "alb": "sq", "wel": "cy",
    "baq": "eu", "bur": "my", "tib": "bo", "iw": "he", "in": "id", "ji": "yi", "fil": "tl", "farsi": "fa",
    "mandarin": "zh", "filipino": "tl", "persian": "fa", "cmn": "zh", "arb": "ar", "swh": "sw", "zsm": "ms",
    "pes": "fa", "npi": "ne", "khk": "mn", "uzn": "uz", "ory": "or", "pnb": "pa", "azj": "az", "ekk": "et",
    "lvs": "lv", "plt": "mg", "kmr": "ku", "als": "sq", "quy": "qu", "nob": "nb",
    "oriya": "or", "zxx": "und",
    # Members of a macrolanguage that language-ID models (py3langid, GlotLID) answer separately.
    "swc": "sw", "prs": "fa", "dty": "ne", "uzs": "uz", "azb": "az", "ckb": "ku", "sdh": "ku", "aln": "sq",
    "gug": "gn", "fuv": "ff", "ltg": "lv", "zlm": "ms", "mvf": "mn",
}
# Arabic (ara) and Chinese (zho) varieties, per ISO 639-3's macrolanguage mappings. Min Nan ('nan') is
# left out on purpose: the string "nan" is what pandas writes for a missing value.
_MEMBERS = {
    "ar": "aao abh abv acm acq acw acx acy adf aeb aec afb ajp apc apd arq ars ary arz auz avl ayh ayl ayn "
    "ayp pga shu ssh",
    "zh": "cdo cjy cnp cpx csp czh czo gan hak hsn lzh mnp wuu yue",
}
for _macro, _members in _MEMBERS.items():
    _ALIASES.update({member: _macro for member in _members.split()})

_BY_ISO3 = {iso3: code for code, (iso3, _) in LANGUAGES.items()}
_BY_NAME = {name.lower(): code for code, (_, name) in LANGUAGES.items()}
_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
# A code outside the table is still accepted if it has the shape of a 639-1 or 639-3 code.
_CODE = re.compile(r"^[a-z]{2,3}$")


def normalize(value: str) -> str:
    """Map a language tag, ISO 639 code or English name onto compass's code.

    >>> normalize("pt-BR"), normalize("swa"), normalize("Swahili"), normalize("zh_Hant")
    ('pt', 'sw', 'sw', 'zh')

    Raises ``ValueError`` naming the value and the expected form when it cannot be mapped.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"language code must be a non-empty string such as 'en' or 'sw'; got {value!r}")
    raw = value.strip()
    low = raw.lower()
    if low in _BY_NAME:
        return _BY_NAME[low]
    if low in _ALIASES:
        return _ALIASES[low]
    if not _TAG.match(raw):
        raise ValueError(
            f"language code {value!r} is not an ISO 639-1/639-3 code or BCP-47 tag; "
            "use e.g. 'en', 'sw', 'yo', 'pt-BR' (see compass/langcodes.py)"
        )
    primary = re.split(r"[-_]", low, maxsplit=1)[0]
    if primary in _ALIASES:
        return _ALIASES[primary]
    if primary in _BY_ISO3:
        return _BY_ISO3[primary]
    if primary == UNDETERMINED or _CODE.match(primary):
        return primary
    raise ValueError(f"language code {value!r} cannot be mapped; use e.g. 'en' or 'sw'")


def name(code: str) -> str:
    """English name of a code, or the code itself when it is not in the table."""
    return LANGUAGES.get(code, (code, code))[1]
