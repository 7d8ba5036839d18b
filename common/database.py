"""One SQLite file with a versioned schema: ordered migration steps applied forward in one transaction on open, and
explicit transactions behind a lock (one connection shared by every thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import StoreError

BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process holding the file before giving up


@dataclass(frozen=True)
class Migration:
    """One step from schema `version - 1` to `version`; never edit a shipped step, add a new one."""

    version: int
    summary: str
    statements: tuple[str, ...]


def check_steps(steps: tuple[Migration, ...]) -> int:
    """The latest version of a list of steps, which must be numbered 1, 2, 3..."""
    if [m.version for m in steps] != list(range(1, len(steps) + 1)):
        raise ValueError("migration versions must be 1, 2, 3...")
    return steps[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file (0 for a new, empty file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def apply_migrations(conn: sqlite3.Connection, from_version: int, steps: tuple[Migration, ...]) -> int:
    """Run every step above `from_version` on an open transaction (the caller commits); returns the new version."""
    latest = check_steps(steps)
    for step in steps:
        if step.version > from_version:
            for statement in step.statements:
                conn.execute(statement)
    # user_version lives in the file header and is transactional: it commits or rolls back with the DDL above.
    conn.execute(f"PRAGMA user_version = {latest:d}")
    return latest


class Database:
    """An SQLite file opened in WAL mode with full syncs and foreign keys, migrated forward on open.

    One connection behind a lock: SQLite has a single writer anyway, and the lock makes each caller's
    read-then-write atomic in this process; `BEGIN IMMEDIATE` makes it atomic against other processes.
    `what` names the file in errors ("conversation database"), `setting` the variable that moves it.
    """

    def __init__(self, path: Path, steps: tuple[Migration, ...], what: str, setting: str) -> None:
        self.path, self.steps, self.what, self.setting = Path(path), steps, what, setting
        self.lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each caller opens its own, explicitly.
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the {what} {self.path}: {exc}. Check that the folder is writable, or "
                             f"set {setting} to another file.") from exc
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
            # FULL rather than NORMAL: in WAL mode NORMAL survives a crash of the app but may lose the last commits
            # on power loss or an OS crash; FULL syncs the log at every commit, so a write that has returned
            # survives both. One fsync per write costs about a millisecond, nothing beside generation.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise self.failure(exc) from exc
        latest = check_steps(self.steps)
        with self.transaction(write=True) as conn:  # under the write lock: two processes never both migrate
            version = schema_version(conn)
            if version > latest:
                raise StoreError(f"The {self.what} {self.path} has schema version {version}, written by a newer "
                                 f"moe-chat (this one reads up to {latest}). Upgrade moe-chat, or set {self.setting} "
                                 f"to another file to keep a separate one.")
            if version < latest:
                try:
                    apply_migrations(conn, version, self.steps)
                except sqlite3.Error as exc:  # the transaction rolls back: the file stays as it was
                    raise StoreError(f"Could not upgrade the {self.what} {self.path} from schema version {version} "
                                     f"to {latest}: {exc}. Nothing was changed; keep a copy of the file and report "
                                     f"this, or set {self.setting} to another file.") from exc

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                # IMMEDIATE takes the write lock up front, so a read-then-write never fails half way with SQLITE_BUSY.
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self.failure(exc) from exc

    def failure(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            advice = (f"the file is damaged or not a moe-chat database: move it away, or set {self.setting} to another "
                      "file")
        elif "locked" in text or "busy" in text:
            advice = "another program is holding the database; close it and try again"
        else:
            advice = (f"check that the disk has free space and the file is writable, or set {self.setting} to another "
                      "file")
        return StoreError(f"The {self.what} {self.path} failed: {exc}; {advice}.")
