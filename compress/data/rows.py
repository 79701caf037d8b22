"""Encoded features held as an Arrow table (pyarrow, which `datasets` is built on) and read as a list of dicts.

Python lists of ints cost about 36 bytes a token; 100,000 texts at 128 tokens held 730 MB that way, against about
100 MB as int32 columns. `ArrowRows` keeps the table and hands out Python dicts a batch at a time, so everything that
reads features (batching, prediction, fingerprints) takes it or a list alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
BATCH = 4096  # rows turned into Python objects at a time when iterating


class ArrowRows(Sequence):
    """Rows of one schema; `rows[i]` is a dict, `rows[a:b]` an ArrowRows, `rows.take(indices)` a list of dicts."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @classmethod
    def from_chunks(cls, chunks: Iterable[list[dict]]) -> ArrowRows:
        """Rows built a chunk at a time, so no more than one chunk exists as Python objects at once."""
        tables = [_table(chunk) for chunk in chunks if chunk]
        if not tables:
            return cls(pa.table({}))
        return cls(pa.concat_tables(tables, promote_options="default").combine_chunks())

    @classmethod
    def from_columns(cls, columns: dict[str, list]) -> ArrowRows:
        """Rows from one list per column (a tokenizer's output and labels, of equal length)."""
        return cls(_with_int32_tokens(pa.table(columns)))

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return ArrowRows(self.table.take(list(range(start, stop, step))))
            return ArrowRows(self.table.slice(start, max(0, stop - start)))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.table.slice(index, 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict]:
        for chunk in self.chunks():
            yield from chunk

    def __add__(self, other: Sequence[dict]) -> ArrowRows:
        return concat_rows(self, other)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and list(self) == list(other)

    def chunks(self) -> Iterator[list[dict]]:
        """The rows as lists of Python dicts, BATCH at a time."""
        for batch in self.table.to_batches(max_chunksize=BATCH):
            yield batch.to_pylist()

    def take(self, indices: Sequence[int]) -> list[dict]:
        return self.table.take(list(indices)).to_pylist()

    def lengths(self) -> list[int]:
        return pc.list_value_length(self.table["input_ids"]).to_pylist()


def concat_rows(first: Sequence[dict], second: Sequence[dict]) -> Sequence[dict]:
    """`first` then `second`: a list where both are lists, else ArrowRows."""
    if isinstance(first, list) and isinstance(second, list):
        return first + second
    tables = [rows.table if isinstance(rows, ArrowRows) else _table(list(rows)) for rows in (first, second) if rows]
    if not tables:
        return ArrowRows(pa.table({}))
    return ArrowRows(pa.concat_tables(tables, promote_options="default"))


def map_rows(rows: Sequence[dict], change: Callable[[dict], dict]) -> Sequence[dict]:
    """`change` applied to every row; ArrowRows stay ArrowRows (built a chunk at a time; none keep their columns)."""
    if isinstance(rows, ArrowRows) and len(rows) == 0:
        return rows
    if isinstance(rows, ArrowRows):
        return ArrowRows.from_chunks([change(row) for row in chunk] for chunk in rows.chunks())
    return [change(row) for row in rows]


def with_column(rows: Sequence[dict], name: str, values: list) -> Sequence[dict]:
    """`rows` with column `name` (which they have) set to `values`, one per row; ArrowRows keep the column's type."""
    if isinstance(rows, ArrowRows):
        table = rows.table
        column = pa.array(values, type=table.schema.field(name).type)
        return ArrowRows(table.set_column(table.column_names.index(name), name, column))
    return [row | {name: value} for row, value in zip(rows, values)]


def take_rows(rows: Sequence[dict], indices: Sequence[int]) -> list[dict]:
    return rows.take(indices) if isinstance(rows, ArrowRows) else [rows[i] for i in indices]


def row_lengths(rows: Sequence[dict]) -> list[int]:
    return rows.lengths() if isinstance(rows, ArrowRows) else [len(row["input_ids"]) for row in rows]


def _table(chunk: list[dict]) -> pa.Table:
    return _with_int32_tokens(pa.Table.from_pylist(chunk))


def _with_int32_tokens(table: pa.Table) -> pa.Table:
    """Token columns as int32 lists (a vocabulary and a max_length fit int32)."""
    for name in TOKEN_COLUMNS:
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name,
                                     table[name].cast(pa.list_(pa.int32())))
    return table
