"""Decoding of Redis replies, which come back as bytes or str depending on the client's ``decode_responses``."""

from __future__ import annotations


def text(v: bytes | str) -> str:
    """A reply value as str."""
    return v.decode() if isinstance(v, bytes) else v


def pairs(flat: list) -> dict[str, str]:
    """A HGETALL reply inside a script comes back as a flat [field, value, ...] list."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
