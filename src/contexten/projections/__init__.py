"""Projections: checkpointed, rebuildable read models folded from the event log (CQRS).

The write side is the event store; the read side is tables a projection keeps up to date
(workflows, dead letters, work-item timelines, platform health, activity per minute, and
your own). Each projection's rows and its checkpoint are written in one transaction, so a
crash never folds an event twice or skips one, and any projection can be rebuilt from the
log while the app serves (into shadow tables, then swapped in).

Write one by subclassing :class:`Projection` (see its docstring) and register it with
``app.add_projection(MyProjection())``; read it with ``app.projections.query(...)``.

Backends sit beside the event store, chosen from the store's URL by
:func:`create_read_models`: ``memory://`` keeps them in process, ``sqlite:///file.db`` in
``file.read.db`` beside it, ``postgresql://...`` in the same schema.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from contexten.exceptions import ConfigurationError
from contexten.projections.base import (
    CheckpointState,
    ColumnType,
    Commit,
    Delete,
    Projection,
    ProjectionBatch,
    Put,
    Query,
    ReadModels,
    Table,
)
from contexten.projections.manager import Projections
from contexten.projections.runner import Progress, ProjectionRunner, ProjectionStatus
from contexten.store.base import EventStore

__all__ = [
    "CheckpointState",
    "ColumnType",
    "Commit",
    "Delete",
    "Progress",
    "Projection",
    "ProjectionBatch",
    "ProjectionRunner",
    "ProjectionStatus",
    "Projections",
    "Put",
    "Query",
    "ReadModels",
    "Table",
    "create_read_models",
]

_BACKENDS: Final[dict[str, tuple[str, str]]] = {
    "memory": ("contexten.projections.memory", "MemoryReadModels"),
    "sqlite": ("contexten.projections.sqlite", "SqliteReadModels"),
    "postgres": ("contexten.projections.postgres", "PostgresReadModels"),
    "postgresql": ("contexten.projections.postgres", "PostgresReadModels"),
}


def create_read_models(store: str | EventStore) -> ReadModels:
    """The (unopened) read-model backend that sits beside ``store`` (a store or its URL).

    Raises:
        ConfigurationError: no read-model backend for the URL's scheme.
    """
    store_url = store if isinstance(store, str) else store.url
    scheme = store_url.partition(":")[0].lower()
    try:
        module_name, class_name = _BACKENDS[scheme]
    except KeyError:
        raise ConfigurationError(f"no read-model backend for store URL scheme {scheme!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"the {scheme} read models are not available: {e}") from e
    options: dict[str, Any] = {}
    schema = getattr(store, "schema", None)
    if scheme.startswith("postgres") and isinstance(schema, str):
        options["schema"] = schema  # a store made with schema= rather than in its URL
    models: ReadModels = getattr(module, class_name)(store_url, **options)
    return models
