"""The registry store (SQLAlchemy Core over SQLite or PostgreSQL): one object, `RegistryStore`.

The write side (`registry.store.write`: patients, ITI-42 look-ups, the atomic commit) and the
read side (`registry.store.read`: stored queries), when present, are mixed into one class so
handlers take a single `store`.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from registry.store.merge import merge_registry_patient
from registry.store.write import (
    RegistrationPlan,
    StoredDocument,
    StoredObject,
    StoreWriter,
)

try:
    from registry.store import read as _read
except ModuleNotFoundError as exc:  # the read side is written separately
    if exc.name != "registry.store.read":
        raise  # read.py exists but imports something missing: that is a bug, not absence
    _read = None

_StoreReader = getattr(_read, "StoreReader", None)
if _read is not None and hasattr(_read, "ResultRow"):
    ResultRow = _read.ResultRow  # the rows the AccessPolicy port filters (registry/ports.py)

_BASES: tuple[type, ...] = (StoreWriter,) if _StoreReader is None else (StoreWriter, _StoreReader)


class RegistryStore(*_BASES):  # type: ignore[misc]
    """The registry's MetadataStore over an Engine: writes, look-ups and (if present) queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        for base in _BASES:
            init = base.__dict__.get("__init__")
            if init is not None:
                init(self, engine)


__all__ = [
    "RegistrationPlan",
    "RegistryStore",
    "StoreWriter",
    "StoredDocument",
    "StoredObject",
    "merge_registry_patient",
]
if _read is not None and hasattr(_read, "ResultRow"):
    __all__.append("ResultRow")
