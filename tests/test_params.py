"""compass/params.py: the one parameter-check sentence, on a table of hand-written cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compass.adapt.config import AdaptError, TrainConfig
from compass.cluster import ClusterParamError, KMeansConfig
from compass.drift.calibrate import CalibrationError, null_js_samples
from compass.params import bad_param, check_choice, check_int, check_real, is_int, is_number, param_message
from compass.select.config import SelectionError


def test_the_sentence():
    assert param_message("k", "X", "an int >= 1", 0) == "The 'k' parameter of X must be an int >= 1. Got 0 instead."
    err = bad_param("k", "X", "an int >= 1", "0", SelectionError)
    assert isinstance(err, SelectionError) and str(err).endswith("Got '0' instead.")


@pytest.mark.parametrize(
    ("value", "allow_numpy", "expected"),
    [(3, False, True), (True, False, False), (3.0, False, False), (np.int64(3), False, False),
     (np.int64(3), True, True), (np.bool_(True), True, False), ("3", True, False)],
)
def test_is_int(value, allow_numpy, expected):
    assert is_int(value, allow_numpy=allow_numpy) is expected


@pytest.mark.parametrize(
    ("value", "finite", "expected"),
    [(1, True, True), (0.5, True, True), (np.float32(0.5), True, True), (False, True, False),
     (math.inf, True, False), (math.nan, True, False), (math.inf, False, True), ("1", True, False),
     (None, True, False)],
)
def test_is_number(value, finite, expected):
    assert is_number(value, finite=finite) is expected


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [
        (0, 1, "The 'n' parameter of f must be an int >= 1. Got 0 instead."),
        (True, 0, "The 'n' parameter of f must be an int >= 0. Got True instead."),
        (1.5, None, "The 'n' parameter of f must be an int. Got 1.5 instead."),
    ],
)
def test_check_int_rejects(value, minimum, message):
    with pytest.raises(ValueError) as e:
        check_int("n", "f", value, minimum)
    assert str(e.value) == message


def test_check_int_returns_a_python_int():
    assert check_int("n", "f", 5, 1) == 5
    got = check_int("n", "f", np.int32(5), 1, allow_numpy=True)
    assert got == 5 and type(got) is int


@pytest.mark.parametrize(
    ("bounds", "value", "must"),
    [
        ({"gt": 0, "le": 10}, 0, "a float in (0, 10]"),
        ({"gt": 0, "le": 10}, 10.5, "a float in (0, 10]"),
        ({"ge": 0, "lt": 1}, 1.0, "a float in [0, 1)"),
        ({"gt": -1, "lt": 1}, -1, "a float in (-1, 1)"),
        ({"ge": 0}, -0.1, "a float >= 0"),
        ({"gt": 0}, 0.0, "a float > 0"),
        ({"le": 2}, 3, "a float <= 2"),
        ({"lt": 2.5}, 2.5, "a float < 2.5"),
        ({}, math.nan, "a float"),
        ({"ge": 0}, "1", "a float >= 0"),
    ],
)
def test_check_real_words_the_bounds(bounds, value, must):
    with pytest.raises(ValueError) as e:
        check_real("x", "g", value, **bounds)
    assert str(e.value) == f"The 'x' parameter of g must be {must}. Got {value!r} instead."


def test_check_real_accepts_and_converts():
    assert check_real("x", "g", 10, gt=0, le=10) == 10.0
    assert check_real("x", "g", 0, ge=0, lt=1) == 0.0
    assert check_real("x", "g", math.inf, gt=0, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"must be a float > 0 \(a hint\)\. Got 0 instead\."):
        check_real("x", "g", 0, gt=0, must="a float > 0 (a hint)")


def test_check_choice():
    check_choice("m", "h", "b", ("a", "b"))
    with pytest.raises(ValueError, match=r"^The 'm' parameter of h must be one of a, b\. Got 'c' instead\.$"):
        check_choice("m", "h", "c", ("a", "b"))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: TrainConfig(rank=0), AdaptError, "The 'rank' parameter of TrainConfig must be an int >= 1. Got 0"),
        (lambda: TrainConfig(dropout=1.0), AdaptError, "'dropout' parameter of TrainConfig must be a float in [0, 1)"),
        (lambda: KMeansConfig(n_init=0), ClusterParamError, "'n_init' parameter of KMeansClusterer must be an int >= 1"),
        (lambda: null_js_samples([1.0], 0, 10, np.random.default_rng(0)), CalibrationError,
         "The 'window_size' parameter of null_js_samples must be an int >= 1. Got 0 instead."),
    ],
)
def test_every_package_raises_its_own_error_with_the_same_sentence(build, error, message):
    with pytest.raises(error) as e:
        build()
    assert message in str(e.value)
