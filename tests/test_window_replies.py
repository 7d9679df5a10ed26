"""infra/window/replies.py: Redis replies decoded the same way whether the client decodes responses or not."""

from __future__ import annotations

import pytest

from infra.window.replies import pairs, text


@pytest.mark.parametrize(("raw", "expected"), [(b"en", "en"), ("en", "en"), (b"", ""), (b"sw:1", "sw:1")])
def test_text(raw, expected):
    assert text(raw) == expected


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ([], {}),
        ([b"codebook_version", b"3.1", b"n_buckets", b"11"], {"codebook_version": "3.1", "n_buckets": "11"}),
        (["0", "4", b"2", "1"], {"0": "4", "2": "1"}),
    ],
)
def test_pairs(flat, expected):
    assert pairs(flat) == expected
