"""Persistent response cache: SQLite in WAL mode, one row per answered request.

The key is a hash of what was sent (provider, endpoint, model, rendered messages or prompt,
normalised sampling parameters incl. the per-sample seed) — not of Python code, so editing a
parser or a stage never invalidates paid answers, and a changed prompt never reuses a stale one.
Every answer is committed as it arrives, so a run killed with ``kill -9`` loses at most the
requests that were in flight; the next run sends only what had not been answered.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from factory.teacher.backends import Reply

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key       TEXT PRIMARY KEY,
    provider  TEXT NOT NULL,
    model     TEXT NOT NULL,
    created   REAL NOT NULL,
    reply     TEXT NOT NULL
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    env = os.environ.get("COT_FACTORY_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cot-factory" / "teacher.sqlite"


class ResponseCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit: each put is its own transaction, durable once it returns (WAL + NORMAL
        # survives a process kill; only an OS crash can lose the last commits).
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, Reply]:
        found: dict[str, Reply] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, reply in self.db.execute(f"SELECT key, reply FROM responses WHERE key IN ({marks})", chunk):
                found[key] = Reply.from_json(reply)
        return found

    def put(self, key: str, provider: str, model: str, reply: Reply) -> None:
        self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                        (key, provider, model, time.time(), reply.to_json()))

    def stats(self) -> dict:
        rows = self.db.execute(
            "SELECT provider, model, COUNT(*), SUM(LENGTH(reply)), MIN(created), MAX(created) FROM responses GROUP BY provider, model ORDER BY provider, model"
        ).fetchall()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path), "bytes": size, "responses": sum(r[2] for r in rows),
            "by_model": [{"provider": r[0], "model": r[1], "responses": r[2], "reply_bytes": r[3],
                          "oldest": r[4], "newest": r[5]} for r in rows],
        }

    def clear(self, model: str | None = None, older_than_s: float | None = None) -> int:
        where, args = [], []
        if model:
            where.append("model = ?")
            args.append(model)
        if older_than_s is not None:
            where.append("created < ?")
            args.append(time.time() - older_than_s)
        sql = "DELETE FROM responses" + (" WHERE " + " AND ".join(where) if where else "")
        n = self.db.execute(sql, args).rowcount
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not where:
            self.db.execute("VACUUM")
        return n

    def close(self) -> None:
        self.db.close()
