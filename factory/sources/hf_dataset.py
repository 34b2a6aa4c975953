"""Hugging Face ``datasets``: a local file or directory, or a hub name when the user is online.

Nothing here downloads unless the recipe names a hub dataset; with HF_HUB_OFFLINE=1 a hub name
that is not cached is a clear error, not a hang.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from factory.errors import InputError
from factory.sources.base import BATCH_RECORDS, RawBatch, Reader, register_reader

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


@register_reader("hf")
class HFDatasetReader(Reader):
    def batches(self) -> Iterator[RawBatch]:
        import datasets

        opts = self.spec.hf
        kwargs = {"split": self.spec.split}
        if opts.revision:
            kwargs["revision"] = opts.revision
        if self.path.is_file():
            suffix = self.path.name.lower().removesuffix(".gz")
            builder = _BUILDERS.get("." + suffix.rsplit(".", 1)[-1])
            if builder is None:
                raise InputError(f"{self.path}: no datasets builder for this file type")
            args, kwargs["data_files"] = (builder,), str(self.path)
        elif self.path.is_dir():
            args = (str(self.path),) + ((opts.config,) if opts.config else ())
            if opts.data_files:
                kwargs["data_files"] = opts.data_files
        else:
            args = (self.spec.path,) + ((opts.config,) if opts.config else ())
            if opts.data_files:
                kwargs["data_files"] = opts.data_files
        try:
            ds = datasets.load_dataset(*args, **kwargs)
        except Exception as e:  # datasets raises many types: offline, missing split, bad config
            raise InputError(f"source '{self.spec.name}': load_dataset({args[0]!r}) failed: {type(e).__name__}: {e}") from None
        row = 0
        for table in ds.with_format("arrow").iter(batch_size=BATCH_RECORDS):
            n = table.num_rows
            yield RawBatch(table=table, rows=np.arange(row, row + n), lines=None)
            row += n
