"""Cluster labels (compass/cluster/labels.py): tokens in any script, c-TF-IDF terms by hand, representatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compass.cluster.labels import LabelError, label_clusters, representatives, tokenize, top_terms

WEATHER = ["rain storm today", "rain wind", "storm rain"]
FOOTBALL = ["goal match today", "goal team", "match goal win"]
TEXTS, LABELS = WEATHER + FOOTBALL, [0, 0, 0, 1, 1, 1]


def test_tokens_in_any_script():
    assert tokenize("Rain, RAIN! 42 東京の天気 बारिश हो") == ["rain", "rain", "東京", "京の", "の天", "天気", "बारिश", "हो"]
    assert tokenize("ฝนตก x_y 雨") == ["ฝน", "นต", "ตก", "x_y", "雨"]


def test_c_tf_idf_weights_by_hand():
    # c0: rain 3, storm 2, today 1, wind 1 (7 terms); c1: goal 3, match 2, today, team, win 1 (8); A = 7.5
    terms = top_terms(TEXTS, LABELS, 2, n_terms=4)
    assert [t for t, _ in terms[0]] == ["rain", "storm", "wind", "today"]
    assert [w for _, w in terms[0]] == pytest.approx([3 / 7 * math.log(3.5), 2 / 7 * math.log(4.75),
                                                      1 / 7 * math.log(8.5), 1 / 7 * math.log(4.75)], abs=1e-12)
    assert [t for t, _ in terms[1]] == ["goal", "match", "team", "win"]  # team/win tie: by term
    assert terms[1][0][1] == pytest.approx(3 / 8 * math.log(3.5), abs=1e-12)


def test_min_docs_keeps_only_terms_of_enough_distinct_texts():
    # min_docs 2: c0 keeps rain 3, storm 2 (5 terms); c1 goal 4, match 2 (6: the repeat counts in tf, not in
    # the distinct texts, so team stays out); A = 5.5
    terms = top_terms(TEXTS + ["goal team"], LABELS + [1], 2, n_terms=5, min_docs=2)  # a repeat is not a new text
    assert [t for t, _ in terms[0]] == ["rain", "storm"]
    assert [w for _, w in terms[0]] == pytest.approx([3 / 5 * math.log(1 + 5.5 / 3), 2 / 5 * math.log(3.75)], abs=1e-12)
    assert [t for t, _ in terms[1]] == ["goal", "match"]
    assert [w for _, w in terms[1]] == pytest.approx([4 / 6 * math.log(2.375), 2 / 6 * math.log(3.75)], abs=1e-12)


@pytest.mark.parametrize("texts, words", [
    (WEATHER + FOOTBALL, (("rain", "storm"), ("goal", "match"))),
    (["明日の天気は雨", "天気予報 雨", "雨の天気", "サッカーの試合", "試合の結果 サッカー", "サッカー試合"],
     (("天気",), ("試合", "サッ"))),
    (["बारिश का मौसम", "मौसम बारिश आज", "बारिश", "क्रिकेट मैच आज", "मैच क्रिकेट", "क्रिकेट"],
     (("बारिश", "मौसम"), ("क्रिकेट", "मैच"))),
    (["ฝนตกหนัก", "ฝนตก", "ฝนตกมาก", "ฟุตบอลนัดนี้", "ฟุตบอล", "ดูฟุตบอล"], (("ฝน", "นต", "ตก"), ("ฟุ", "ตบ", "บอ"))),
])
def test_labels_of_a_planted_two_topic_corpus_name_the_topics(texts, words):
    doc = label_clusters(texts, LABELS, 2, store_examples=False, min_docs=2)
    for cluster, expected in zip(doc["clusters"], words, strict=True):
        assert set(expected) & set(cluster["terms"]), (cluster["label"], expected)
        assert cluster["examples"] == [] and cluster["size"] == 3
    assert (doc["store_examples"], doc["min_docs"], doc["n_texts"]) == (False, 2, 6)


def test_representatives_are_the_texts_nearest_the_centroid():
    X = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1], [0, 1], [0.6, 0.8]], dtype=np.float32)
    C = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert representatives(TEXTS, LABELS, X, C, n=2) == [["rain storm today", "storm rain"],
                                                         ["goal match today", "goal team"]]
    doc = label_clusters(TEXTS, LABELS, 2, X=X, centroids=C, n_examples=1)
    assert [c["examples"] for c in doc["clusters"]] == [["rain storm today"], ["goal match today"]]
    assert doc["clusters"][0]["label"] == "rain · storm · wind" and doc["min_docs"] == 1
    with pytest.raises(LabelError, match="2 cluster ids for 6 texts"):
        top_terms(TEXTS, [0, 1], 2)
