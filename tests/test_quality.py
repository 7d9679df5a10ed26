"""The performance-aware second signal (compass/drift/quality.py) and its settings in languages.yaml."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from compass.drift.quality import QualitySignal, QualitySignalError, combine
from compass.languages import LanguagesConfig, LanguageSettings
from compass.validation import format_validation_error

CHANGE_AT = 1000


def _stream(shift: float) -> np.ndarray:
    """A seeded quality stream (e.g. NLL): N(2, 0.5) for 1000 values, then its mean moves by ``shift``."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.normal(2.0, 0.5, CHANGE_AT), rng.normal(2.0 + shift, 0.5, 1000)])


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_mean_shift_is_detected_after_the_change_within_a_short_delay(kind):
    signal = QualitySignal(kind)
    hits = [i for i, x in enumerate(_stream(1.0)) if signal.update(x)]
    # observed once for seed 7 with river 0.26 defaults: both flag value 1023 (ADWIN checks every clock=32 values)
    assert hits == [1023]
    assert CHANGE_AT <= hits[0] < CHANGE_AT + 200
    assert signal.state() == {"kind": kind, "n_seen": 2000, "n_detections": 1, "last_detection_index": 1023}


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_stationary_stream_is_not_flagged(kind):
    signal = QualitySignal(kind)
    assert signal.feed(_stream(0.0)) is False
    assert signal.n_detections == 0 and signal.last_detection_index is None


def test_feed_reports_no_data_detection_or_none():
    signal = QualitySignal("page_hinkley")
    assert signal.feed([]) is None
    stream = _stream(1.0)
    assert signal.feed(stream[:1000]) is False
    assert signal.feed(stream[1000:1100]) is True
    assert signal.n_seen == 1100


def test_params_reach_the_river_detector():
    assert QualitySignal("adwin", delta=0.1).detector.delta == 0.1
    assert QualitySignal("page_hinkley", threshold=20.0, mode="up").detector.threshold == 20.0


def test_bad_settings_and_values_name_the_fix():
    with pytest.raises(QualitySignalError, match="quality_signal: got 'cusum'; use one of adwin, page_hinkley"):
        QualitySignal("cusum")
    with pytest.raises(QualitySignalError, match="bad parameters"):
        QualitySignal("adwin", thresold=3)
    with pytest.raises(QualitySignalError, match=r"quality value #0: got nan"):
        QualitySignal("adwin").update(float("nan"))
    with pytest.raises(QualitySignalError, match="combine: got 'both'"):
        combine(True, True, "both")


@pytest.mark.parametrize("js, quality, rule, fire", [
    (False, None, "js_only", False), (True, None, "js_only", True),
    (False, True, "js_only", False), (True, False, "js_only", True),
    (False, None, "any", False), (True, None, "any", True),
    (False, False, "any", False), (False, True, "any", True), (True, False, "any", True), (True, True, "any", True),
    (False, None, "all", False), (True, None, "all", True),  # no quality data: JS alone
    (False, False, "all", False), (False, True, "all", False), (True, False, "all", False), (True, True, "all", True),
])
def test_combine_truth_table(js, quality, rule, fire):
    assert combine(js, quality, rule) is fire


def test_language_settings_fields():
    s = LanguageSettings()
    assert (s.quality_signal, s.combine) == ("none", "js_only")
    cfg = LanguagesConfig.model_validate({"defaults": {"combine": "any"},
                                          "languages": {"sw": {"quality_signal": "adwin"}, "yo": {}}})
    assert (cfg.languages["sw"].quality_signal, cfg.languages["sw"].combine) == ("adwin", "any")
    assert cfg.languages["yo"].quality_signal == "none"
    with pytest.raises(ValidationError) as e:
        LanguagesConfig.model_validate({"languages": {"sw": {"quality_signal": "cusum", "combine": "both"}}})
    problems = format_validation_error(e.value, LanguagesConfig)
    assert any(p.startswith("languages.sw.quality_signal: got 'cusum'") and "none, adwin or page_hinkley" in p
               for p in problems)
    assert any(p.startswith("languages.sw.combine: got 'both'") and "js_only, any or all" in p for p in problems)
