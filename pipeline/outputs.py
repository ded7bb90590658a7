"""Deterministic, atomic Parquet outputs for Beam jobs.

``WriteSortedShards`` spreads rows over ``ceil(rows / rows_per_file)`` files by a hash of
a key, sorts each file's rows, and names files ``part-IIIII-of-NNNNN.parquet``: the same
rows give byte-identical files on any runner, with any number of workers, after any retry.
Each file is written under a temp name and renamed; files of an earlier run with another
file count are removed once the new set is complete.
"""

from __future__ import annotations

import math
from typing import Callable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from schemas import fileio

PART = "part-{index:05d}-of-{count:05d}.parquet"


def part_name(index: int, count: int) -> str:
    return PART.format(index=index, count=count)


def shard_of(key: str, count: int) -> int:
    return schemas.ids.hash64(schemas.ids.PARTITION, key) % count


def write_rows(dest: str, rows: list[dict], schema: pa.Schema) -> None:
    table = schemas.validate(pa.Table.from_pylist(rows, schema=schema), schema, where=dest)
    with fileio.atomic_local(dest) as tmp:
        pq.write_table(table, tmp, compression=schemas.io.COMPRESSION)


class WriteSortedShards(beam.PTransform):
    """Rows -> ``folder/part-*.parquet``; outputs the number of rows written (one element)."""

    def __init__(self, folder: str, schema: pa.Schema, key: Callable[[dict], str],
                 sort_key: Callable[[dict], object], rows_per_file: int):
        super().__init__()
        self.folder, self.schema, self.key, self.sort_key = folder, schema, key, sort_key
        self.rows_per_file = rows_per_file

    def expand(self, rows):
        rows_per_file = self.rows_per_file
        total = rows | "Count" >> beam.combiners.Count.Globally()
        files = total | "Files" >> beam.Map(lambda n: max(1, math.ceil(n / rows_per_file)))
        written = (
            rows
            | "Key" >> beam.Map(lambda r, n, key=self.key: (shard_of(key(r), n), r), n=beam.pvalue.AsSingleton(files))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(self._write, n=beam.pvalue.AsSingleton(files))
        )
        return (
            total
            | "Finish" >> beam.Map(self._finish, n=beam.pvalue.AsSingleton(files),
                                   written=beam.pvalue.AsList(written))
        )

    def _write(self, group: tuple[int, list[dict]], n: int) -> int:
        index, rows = group
        ordered = sorted(rows, key=self.sort_key)
        write_rows(fileio.join(self.folder, part_name(index, n)), ordered, self.schema)
        return index

    def _finish(self, total: int, n: int, written: list[int]) -> int:
        for index in sorted(set(range(n)) - set(written)):  # empty shards still exist
            write_rows(fileio.join(self.folder, part_name(index, n)), [], self.schema)
        keep = {part_name(i, n) for i in range(n)}
        for name in fileio.listdir(self.folder):
            if name.startswith("part-") and name.endswith(".parquet") and name not in keep:
                fileio.remove(fileio.join(self.folder, name))
        return total


class TableWriter:
    """Rows to one Parquet file in row groups, published atomically on close."""

    def __init__(self, dest: str, schema: pa.Schema, batch_rows: int = 50_000):
        self.dest, self.schema, self.batch_rows = dest, schema, batch_rows
        self._ctx = fileio.atomic_local(dest)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, schema, compression=schemas.io.COMPRESSION)
        self._rows: list[dict] = []

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        self._writer.write_table(schemas.validate(table, self.schema, where=self.dest))
        self._rows.clear()

    def close(self) -> None:
        if self._rows:
            self._flush()
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._writer.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
