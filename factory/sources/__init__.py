"""Source readers, registered by the ``format`` name a recipe uses."""

from __future__ import annotations

from pathlib import Path

from factory.errors import InputError
from factory.recipe.model import SourceBase
from factory.sources import csv_file, dialogue, hf_dataset, json_document, jsonl, mapping, parquet_file  # noqa: F401  (registers)
from factory.sources.base import READERS, RawBatch, Reader, Reject, sniff_format


def open_source(spec: SourceBase, base_dir: Path) -> Reader:
    """The reader for a recipe source; paths are relative to the recipe file."""
    path = (base_dir / spec.path) if not Path(spec.path).is_absolute() else Path(spec.path)
    fmt = spec.format
    if fmt == "auto":  # hub datasets need an explicit `format: hf`: a typo must not go online
        if not path.exists():
            raise InputError(f"source '{spec.name}': no such file or directory: {path}")
        fmt = sniff_format(path)
    return READERS[fmt](spec, path)


__all__ = ["READERS", "RawBatch", "Reader", "Reject", "open_source"]
