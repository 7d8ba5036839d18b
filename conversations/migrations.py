"""The conversation database's schema: ordered migration steps, applied forward inside one transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One step from schema `version - 1` to `version`; never edit a shipped step, add a new one."""

    version: int
    summary: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations and their messages", (
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            model_id TEXT,
            system_prompt TEXT NOT NULL DEFAULT '',
            params TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX conversations_by_update ON conversations (updated_at DESC)",
        """CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position INTEGER NOT NULL CHECK (position >= 0),
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (conversation_id, position)
        )""",
    )),
    Migration(2, "per-message generation stats, partial (stopped) replies, renamed titles kept", (
        "ALTER TABLE messages ADD COLUMN stats TEXT",
        "ALTER TABLE messages ADD COLUMN partial INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1))",
        "ALTER TABLE conversations ADD COLUMN title_edited INTEGER NOT NULL DEFAULT 0 CHECK (title_edited IN (0, 1))",
    )),
    Migration(3, "a revision per conversation, so that a tab with a stale view cannot write over another's", (
        "ALTER TABLE conversations ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
    )),
)
LATEST_VERSION = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1)), "migration versions must be 1, 2, 3..."


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file (0 for a new, empty file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(conn: sqlite3.Connection, from_version: int) -> int:
    """Run every step above `from_version` on an open transaction (the caller commits); returns the new version."""
    for step in MIGRATIONS:
        if step.version > from_version:
            for statement in step.statements:
                conn.execute(statement)
    # user_version lives in the file header and is transactional: it commits or rolls back with the DDL above.
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION:d}")
    return LATEST_VERSION
