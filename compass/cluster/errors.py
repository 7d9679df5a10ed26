"""The clustering errors: one root, one class per kind of mistake, each also the matching builtin."""

from __future__ import annotations

from compass.errors import CompassError


class ClusterError(CompassError):
    """Root of the clustering errors."""


class ClusterInputError(ClusterError, ValueError):
    """X is not a non-empty, finite, 2-D array of unit-norm rows (of the fitted dimension)."""


class ClusterParamError(ClusterError, ValueError):
    """A clusterer parameter is invalid, alone or with the others."""


class ClusterNotFittedError(ClusterError, RuntimeError):
    """predict/save/update was called before fit."""


class ClusterLoadError(ClusterError, ValueError):
    """A saved clusterer directory is missing, malformed, of another format version, or does not reproduce."""
