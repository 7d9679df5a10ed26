"""Versioned per-language adapter registry: immutable versions (safetensors + config + manifest) and an
atomically moved ``current`` pointer. See ``compass/registry/store.py`` for the layout and crash safety."""

from compass.registry.manifest import AdapterManifest, RegistryError, new_version
from compass.registry.store import AdapterRegistry

__all__ = ["AdapterManifest", "AdapterRegistry", "RegistryError", "new_version"]
