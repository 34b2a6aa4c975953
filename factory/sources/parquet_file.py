"""Parquet (plain, or gzipped as a whole file)."""

from __future__ import annotations

import io
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from factory.errors import InputError
from factory.sources.base import BATCH_RECORDS, RawBatch, Reader, is_gzip, read_bytes, register_reader


@register_reader("parquet")
class ParquetReader(Reader):
    def batches(self) -> Iterator[RawBatch]:
        source = io.BytesIO(read_bytes(self.path)) if is_gzip(self.path) else self.path
        try:
            pf = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{self.path}: not a readable Parquet file: {e}") from None
        row = 0
        for rb in pf.iter_batches(batch_size=BATCH_RECORDS):
            self.stats.bytes += rb.nbytes
            n = rb.num_rows
            yield RawBatch(table=pa.Table.from_batches([rb]), rows=np.arange(row, row + n), lines=None)
            row += n
