"""A table as a server holds it, against the pipeline's: whether it can take
a day swap (REPLACE PARTITION from a staging table of the pipeline's
layout), and the layout a migration rebuilds it in. Pure functions, no
servers; workflows.clickhouse reads what the server holds."""
import dataclasses
import re
from dataclasses import dataclass

from .schema import Table

PARTITION_KEY = ("processing_date", "window_days")  # what a day swap replaces
SWAPPABLE_ENGINES = ("MergeTree", "ReplicatedMergeTree")
# The system this pipeline replaces stored the is_* flags as Bool, which a
# server that has the type keeps (queries compare them to true); it swaps
# days in from UInt8 staging tables, the same bytes.
SAME_BYTES = {("UInt8", "Bool")}


@dataclass(frozen=True)
class ServedTable:
    """What system.tables, system.columns and system.data_skipping_indices say of a table."""

    engine: str
    partition_key: str
    sorting_key: str
    columns: tuple[tuple[str, str], ...]  # ((name, type), ...) in the table's order
    indexes: tuple[str, ...] = ()  # "INDEX name expr TYPE type GRANULARITY n", where the server has skip indexes


def key_columns(expression: str) -> tuple[str, ...]:
    """A partition or sorting key as a tuple of its expressions: '(a, b)' and 'a, b' alike."""
    text = expression.strip()
    if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1]
    return tuple(part.strip() for part in _top_level_split(text) if part.strip())


def layout_differences(table: Table, served: ServedTable) -> list[str]:
    """What keeps `served` from taking a day swap of `table`, as short
    phrases; none when it can."""
    differences = []
    if served.engine not in SWAPPABLE_ENGINES:
        differences.append(f"engine {served.engine}, not MergeTree")
    partition = key_columns(served.partition_key)
    if partition != PARTITION_KEY:
        differences.append(f"partition key ({', '.join(partition)}), the pipeline's ({', '.join(PARTITION_KEY)})")
    order = key_columns(served.sorting_key)
    if order != table.order_by:
        differences.append(f"order ({', '.join(order)}), the pipeline's ({', '.join(table.order_by)})")
    held = dict(served.columns)
    missing = [c.name for c in table.columns if c.name not in held]
    extra = [name for name, _ in served.columns if name not in table.column_names]
    typed = [f"{c.name} {held[c.name]}" for c in table.columns
             if c.name in held and not _same_bytes(c.type, held[c.name])]
    if missing:
        differences.append("no column " + ", ".join(missing))
    if extra:
        differences.append("columns the pipeline lacks: " + ", ".join(extra))
    if typed:
        differences.append("types " + ", ".join(typed) + " (the pipeline's differ)")
    if not (missing or extra or typed) and [n for n, _ in served.columns] != table.column_names:
        differences.append("columns in another order")
    return differences


def migrated_layout(table: Table, served: ServedTable) -> Table:
    """`table` as a migration rebuilds `served` in: the pipeline's columns,
    keys and engine, with the served table's Bool flags and skip indexes
    kept, so that its readers' queries keep their types and speed."""
    held = dict(served.columns)
    columns = tuple(dataclasses.replace(c, type=held[c.name]) if c.name in held and (c.type, held[c.name]) in SAME_BYTES
                    else c for c in table.columns)
    return dataclasses.replace(table, columns=columns, indexes=served.indexes)


def _same_bytes(ours: str, theirs: str) -> bool:
    ours, theirs = _spelled_out(ours), _spelled_out(theirs)
    return ours == theirs or (ours, theirs) in SAME_BYTES


def _spelled_out(type_: str) -> str:
    """A type as system.columns spells it: Decimal128(18) is Decimal(38, 18)."""
    return re.sub(r"Decimal128\((\d+)\)", r"Decimal(38, \1)", type_)


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _top_level_split(text: str) -> list[str]:
    """`text` split at the commas outside parentheses and quotes."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for token in re.split(r"('(?:[^'\\]|\\.)*'|[(),])", text):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif token == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(token)
    parts.append("".join(current))
    return parts
