"""SQL text shared by the SQLite and PostgreSQL read-model backends.

Table and column names come from :class:`~contexten.projections.base.Table`, whose names are
checked against ``[a-z][a-z0-9_]*`` when declared, so they are safe to splice into SQL; every
value goes through a placeholder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from contexten.projections.base import Query, Table, check_query, order_columns

__all__ = [
    "CHECKPOINTS",
    "POSTGRES",
    "SQLITE",
    "BulkPlan",
    "Dialect",
    "TablePlan",
    "count",
    "physical",
    "plan",
    "postgres_bulk",
    "rename",
    "select",
]

CHECKPOINTS: Final = "projection_checkpoints"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the engines: column types and placeholders."""

    types: Mapping[str, str]
    placeholder: Callable[[int], str]


SQLITE: Final = Dialect(
    types={
        "text": "TEXT",
        "int": "INTEGER",
        "float": "REAL",
        "bool": "INTEGER",
        "time": "TEXT",
        "json": "TEXT",
    },
    placeholder=lambda i: "?",
)

POSTGRES: Final = Dialect(
    types={
        "text": "TEXT",
        "int": "BIGINT",
        "float": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
        "time": "TIMESTAMPTZ",
        "json": "TEXT",
    },
    placeholder=lambda i: f"${i}",
)


def physical(table: Table, shadow: bool) -> str:
    """The stored name of ``table`` (prefixed, so read models never meet store tables)."""
    return f"rm_{table.name}__shadow" if shadow else f"rm_{table.name}"


def _index_name(table: Table, columns: tuple[str, ...], generation: str) -> str:
    # The generation keeps a shadow's indexes apart from the live ones: they keep their
    # names when the shadow table is renamed in, and SQLite cannot rename an index.
    digest = hashlib.sha256(",".join(columns).encode()).hexdigest()[:8]
    return f"rm_{table.name}_ix_{digest}_{generation}"


@dataclass(frozen=True, slots=True)
class TablePlan:
    """The statements for one table (live or shadow)."""

    create: list[str]
    drop: str
    upsert: str
    delete: str
    get: str


def plan(
    table: Table, dialect: Dialect, *, shadow: bool = False, generation: str = "0"
) -> TablePlan:
    """Build the create/upsert/delete/get statements of ``table``.

    Run ``create`` only when the table does not exist yet (a swapped-in table carries its
    shadow's index names).
    """
    name = physical(table, shadow)
    cols = list(table.columns)
    p = dialect.placeholder
    defs = ", ".join(f"{c} {dialect.types[table.columns[c]]}" for c in cols)
    create = [f"CREATE TABLE IF NOT EXISTS {name} ({defs}, PRIMARY KEY ({', '.join(table.key)}))"]
    for ix in table.indexes:
        create.append(
            f"CREATE INDEX IF NOT EXISTS {_index_name(table, ix, generation)} "
            f"ON {name} ({', '.join(ix)})"
        )
    values = ", ".join(p(i + 1) for i in range(len(cols)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    upsert = (
        f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(table.key)}) {conflict}"
    )
    key_match = " AND ".join(f"{c} = {p(i + 1)}" for i, c in enumerate(table.key))
    return TablePlan(
        create=create,
        drop=f"DROP TABLE IF EXISTS {name}",
        upsert=upsert,
        delete=f"DELETE FROM {name} WHERE {key_match}",
        get=f"SELECT {', '.join(cols)} FROM {name} WHERE {key_match}",
    )


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """PostgreSQL statements that take each column's values as one array (``unnest``), so
    a batch reads, upserts or deletes any number of rows of a table in one round trip."""

    get: str
    upsert: str
    delete: str


def postgres_bulk(table: Table, *, shadow: bool = False) -> BulkPlan:
    """The multi-row get/upsert/delete of ``table`` on PostgreSQL.

    ``get`` and ``delete`` take one array per key column, ``upsert`` one per column (in
    the table's column order). An upsert's rows must have distinct keys.
    """
    name = physical(table, shadow)
    cols = list(table.columns)

    def arrays(columns: list[str]) -> str:
        return ", ".join(
            f"${i + 1}::{POSTGRES.types[table.columns[c]]}[]" for i, c in enumerate(columns)
        )

    key = ", ".join(table.key)
    keys = f"SELECT * FROM unnest({arrays(list(table.key))})"
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return BulkPlan(
        get=f"SELECT {', '.join(cols)} FROM {name} WHERE ({key}) IN ({keys})",
        upsert=(
            f"INSERT INTO {name} ({', '.join(cols)}) SELECT * FROM unnest({arrays(cols)}) "
            f"ON CONFLICT ({key}) {conflict}"
        ),
        delete=f"DELETE FROM {name} WHERE ({key}) IN ({keys})",
    )


def rename(table: Table) -> str:
    """The statement that renames ``table``'s shadow to the live name (live dropped first)."""
    return f"ALTER TABLE {physical(table, True)} RENAME TO {physical(table, False)}"


def select(
    table: Table, query: Query, dialect: Dialect, encode: Callable[[Table, str, Any], Any]
) -> tuple[str, list[Any]]:
    """The SELECT for ``query`` on ``table`` and its arguments."""
    check_query(table, query)
    cols, desc = order_columns(table, query.order)
    args: list[Any] = []

    def arg(column: str, value: Any) -> str:
        args.append(encode(table, column, value))
        return dialect.placeholder(len(args))

    where: list[str] = []
    for c, v in query.where.items():
        where.append(f"{c} IS NULL" if v is None else f"{c} = {arg(c, v)}")
    if query.prefix is not None:
        c, text = query.prefix
        # A range, not LIKE: no escaping, and it uses the column's index.
        where.append(f"{c} >= {arg(c, text)}")
        if text:
            where.append(f"{c} < {arg(c, text + chr(0x10FFFF))}")
    if query.since is not None:
        where.append(f"{query.since[0]} >= {arg(query.since[0], query.since[1])}")
    if query.until is not None:
        where.append(f"{query.until[0]} < {arg(query.until[0], query.until[1])}")
    if query.after is not None:
        marks = ", ".join(arg(c, v) for c, v in zip(cols, query.after, strict=True))
        where.append(f"({', '.join(cols)}) {'<' if desc else '>'} ({marks})")
    direction = " DESC" if desc else ""
    sql = f"SELECT {', '.join(table.columns)} FROM {physical(table, False)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY " + ", ".join(f"{c}{direction}" for c in cols)
    sql += f" LIMIT {int(query.limit)}"
    return sql, args


def count(
    table: Table, where: Mapping[str, Any], dialect: Dialect, encode: Callable[..., Any]
) -> tuple[str, list[Any]]:
    """A COUNT(*) with equalities."""
    args: list[Any] = []
    parts = []
    for c, v in where.items():
        if c not in table.columns:
            raise ValueError(f"table {table.name!r} has no column {c!r}")
        if v is None:
            parts.append(f"{c} IS NULL")
        else:
            args.append(encode(table, c, v))
            parts.append(f"{c} = {dialect.placeholder(len(args))}")
    sql = f"SELECT COUNT(*) FROM {physical(table, False)}"
    if parts:
        sql += " WHERE " + " AND ".join(parts)
    return sql, args
