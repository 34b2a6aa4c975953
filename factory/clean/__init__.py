"""Clean data: dedup (exact + MinHash), decontamination, Great Expectations validation."""
