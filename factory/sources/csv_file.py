"""CSV / TSV with a header row; quoted fields may span lines. Values stay strings.

Fast path: pyarrow.csv parses the file, and each record's first line is computed from the newlines
inside its fields; the path is taken only when that arithmetic lands exactly on the file's line
count (no blank lines, no ragged rows, valid UTF-8). Anything else goes through Python's csv
module record by record, so one bad row is that row's problem.
"""

from __future__ import annotations

import csv
import io
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from factory.sources.base import (
    BATCH_RECORDS, RawBatch, Reader, Reject, decode, first_bad_byte, printable, read_bytes, register_reader,
)


@register_reader("csv")
class CsvReader(Reader):
    def batches(self) -> Iterator[RawBatch]:
        data = read_bytes(self.path)
        self.stats.bytes = len(data)
        delimiter = "\t" if self.path.name.lower().removesuffix(".gz").endswith(".tsv") else self.spec.csv_delimiter
        fast = _fast_table(data, delimiter)
        if fast is not None:
            table, lines = fast
            for start in range(0, table.num_rows, BATCH_RECORDS):
                n = min(BATCH_RECORDS, table.num_rows - start)
                yield RawBatch(table=table.slice(start, n), rows=np.arange(start, start + n), lines=lines[start:start + n])
            return
        yield from self._careful(data, delimiter)

    def _careful(self, data: bytes, delimiter: str) -> Iterator[RawBatch]:
        text, had_errors = decode(data)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        batch = RawBatch()
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            batch.rejects.append(Reject(None, 1, f"unreadable CSV header: {e}", ""))
            yield batch
            return
        width = len(header)
        row = 0
        end_line = reader.line_num
        while True:
            start_line = end_line + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                end_line = reader.line_num
                batch.rejects.append(Reject(row, start_line, f"malformed CSV: {e}", ""))
                row += 1
                continue
            end_line = reader.line_num
            if not values:
                self.stats.blank_lines += 1
                continue
            if len(values) != width:
                batch.rejects.append(Reject(row, start_line, f"expected {width} fields, got {len(values)}", printable(delimiter.join(values))))
            elif had_errors and (bad := first_bad_byte(values)):
                batch.rejects.append(Reject(row, start_line, bad, printable(delimiter.join(values))))
            else:
                batch.records.append(dict(zip(header, values)))
                batch.rows.append(row)
                batch.lines.append(start_line)
            row += 1
            if len(batch) >= BATCH_RECORDS:
                yield batch
                batch = RawBatch()
        if len(batch):
            yield batch


def _fast_table(data: bytes, delimiter: str) -> tuple[pa.Table, np.ndarray] | None:
    """The records as a table, and their first lines, via pyarrow.csv; None when the file needs the careful path
    (invalid UTF-8, ragged rows, blank lines, duplicate column names)."""
    try:
        text_head = data[: 1 << 16].decode("utf-8", "replace")
        header = next(csv.reader(io.StringIO(text_head, newline=""), delimiter=delimiter))
        if len(set(header)) != len(header):
            return None
        # pyarrow validates UTF-8 while converting to string columns: bad bytes raise here.
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (UnicodeDecodeError, StopIteration, csv.Error, pa.ArrowInvalid):
        return None
    if table.num_rows == 0 or table.column_names != header:
        return None
    # A record spans 1 + (newlines inside its fields) lines; the sum must land on the file's
    # last line, or something (a blank line pyarrow skipped) shifted the count.
    inner = np.zeros(table.num_rows, dtype=np.int64)
    for col in table.columns:
        inner += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
    header_lines = 1 + sum(h.count("\n") for h in header)
    spans = inner + 1
    starts = header_lines + 1 + np.concatenate(([0], np.cumsum(spans)[:-1]))
    total_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if int(starts[-1] + spans[-1] - 1) != total_lines:
        return None
    return table, starts
