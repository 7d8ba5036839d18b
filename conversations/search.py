"""Full-text search over saved messages, Chinese as well as English.

SQLite's FTS5 with the `trigram` tokenizer finds any run of 3 or more characters, whatever the language (the
`unicode61` tokenizer does not split Chinese into words). Shorter terms (a 2-character Chinese word) are matched with
LIKE on the messages themselves, and so is everything when this SQLite has no FTS5 or while the index is still being
built. The index is not part of the schema migrations: it is built afterwards, in small resumable steps, so a slow
or failing build never keeps the conversations from opening. Triggers keep it in step with every message written,
rewritten (an answer as it streams) or deleted; while it is being built they leave alone the rows the build has not
reached (ids in (upto, target]), so no message is indexed twice.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from dataclasses import dataclass

from common.database import Database
from common.errors import StoreError

log = logging.getLogger(__name__)
HIT_START, HIT_END = "\x02", "\x03"  # around each match in a snippet; the page turns them into highlights
BUILD_BATCH = 500  # messages indexed per transaction: the lock is never held long while the page writes
SNIPPET_CHARS = 90
MAX_TERMS = 8
_SETUP = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_messages USING fts5(content, tokenize = 'trigram')",
    "CREATE TABLE IF NOT EXISTS search_progress (upto INTEGER NOT NULL, target INTEGER NOT NULL)",
    "INSERT INTO search_progress (upto, target) SELECT 0, COALESCE(MAX(id), 0) FROM messages "
    "WHERE NOT EXISTS (SELECT 1 FROM search_progress)",
    """CREATE TRIGGER IF NOT EXISTS search_add AFTER INSERT ON messages
       WHEN new.id <= (SELECT upto FROM search_progress) OR new.id > (SELECT target FROM search_progress)
       BEGIN INSERT INTO search_messages (rowid, content) VALUES (new.id, new.content); END""",
    """CREATE TRIGGER IF NOT EXISTS search_change AFTER UPDATE OF content ON messages
       WHEN new.id <= (SELECT upto FROM search_progress) OR new.id > (SELECT target FROM search_progress)
       BEGIN DELETE FROM search_messages WHERE rowid = old.id;
             INSERT INTO search_messages (rowid, content) VALUES (new.id, new.content); END""",
    """CREATE TRIGGER IF NOT EXISTS search_remove AFTER DELETE ON messages
       BEGIN DELETE FROM search_messages WHERE rowid = old.id; END""",
)


@dataclass(frozen=True)
class SearchHit:
    """One message that matched: where it is, and a snippet with the matches between HIT_START and HIT_END."""

    conversation_id: str
    title: str
    message_id: int
    role: str
    snippet: str
    created_at: float


@dataclass(frozen=True)
class IndexState:
    """How far the search index is: `done` of `total` messages that were there when the build began."""

    available: bool  # this SQLite has FTS5 with the trigram tokenizer
    done: int
    total: int
    error: str | None = None  # why the last build step failed (search works without the index meanwhile)

    @property
    def ready(self) -> bool:
        return self.available and self.error is None and self.done >= self.total


def has_trigram_fts(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite can build the index (FTS5 with the trigram tokenizer, SQLite 3.34 or later)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.trigram_probe USING fts5(x, tokenize = 'trigram')")
        conn.execute("DROP TABLE temp.trigram_probe")
        return True
    except sqlite3.Error:
        return False


_TERM = re.compile(r'"([^"]+)"|(\S+)')


def terms_of(query: str) -> list[str]:
    """The words of a query, a "quoted phrase" as one (at most MAX_TERMS, each matched as typed, case aside)."""
    terms = [" ".join((phrase or word).split()) for phrase, word in _TERM.findall(query)]
    return [term for term in terms if term.strip('"')][:MAX_TERMS]


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def mark(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """A window of `text` around the first match of any term, every match in it marked."""
    folded = text.casefold()
    found = [(folded.find(term.casefold()), term) for term in terms]
    found = [(at, term) for at, term in found if at >= 0]
    first = min((at for at, _ in found), default=0)
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    window, folded_window = text[start:end], folded[start:end]
    spans: list[tuple[int, int]] = []
    for _, term in found:
        at = folded_window.find(term.casefold())
        while at >= 0:
            spans.append((at, at + len(term)))
            at = folded_window.find(term.casefold(), at + len(term))
    out, last = [], 0
    for begin, finish in sorted(spans):
        if begin < last:
            continue
        out += [window[last:begin], HIT_START, window[begin:finish], HIT_END]
        last = finish
    out.append(window[last:])
    return ("…" if start else "") + "".join(out) + ("…" if end < len(text) else "")


class SearchIndex:
    """The trigram index of one conversation database, and the queries over it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._error: str | None = None
        self._building = threading.Lock()
        with db.transaction(write=False) as conn:
            self.available = has_trigram_fts(conn)

    def state(self) -> IndexState:
        if not self.available:
            return IndexState(False, 0, 0)
        with self._db.transaction(write=False) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'search_progress'").fetchone():
                return IndexState(True, 0, 1, self._error)
            upto, target = conn.execute("SELECT upto, target FROM search_progress").fetchone()
            done, total = conn.execute("SELECT COUNT(*) FILTER (WHERE id <= ?), COUNT(*) FROM messages "
                                       "WHERE id <= ?", (upto, target)).fetchone()
        return IndexState(True, done if upto < target else total, total, self._error)

    def build_step(self, batch: int = BUILD_BATCH) -> bool:
        """Index the next `batch` messages in one transaction; True once every message is indexed. Safe to stop
        at any point and to run again later (from another process too): it goes on where it stopped."""
        if not self.available:
            return True
        try:
            with self._db.transaction(write=True) as conn:
                for statement in _SETUP:
                    conn.execute(statement)
                upto, target = conn.execute("SELECT upto, target FROM search_progress").fetchone()
                if upto >= target:
                    return True
                (last,) = conn.execute(
                    "SELECT MAX(id) FROM (SELECT id FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)",
                    (upto, target, batch)).fetchone()
                last = target if last is None else last
                conn.execute("INSERT INTO search_messages (rowid, content) SELECT id, content FROM messages "
                             "WHERE id > ? AND id <= ?", (upto, last))
                conn.execute("UPDATE search_progress SET upto = ?", (last,))
                self._error = None
                return last >= target
        except StoreError as exc:
            self._error = str(exc)
            raise

    def build(self) -> None:
        """Build the whole index (one build at a time in this process)."""
        with self._building:
            while not self.build_step():
                pass

    def build_in_background(self) -> threading.Thread:
        """Build the index on a thread of its own; a failure is logged and shown with the search (which works
        without the index meanwhile), and the next start goes on from where it stopped."""
        def build() -> None:
            try:
                self.build()
            except StoreError as exc:
                log.warning("The search index could not be built (search goes on without it): %s", exc)

        thread = threading.Thread(target=build, name="search-index", daemon=True)
        thread.start()
        return thread

    def search(self, query: str, owner: str | None, limit: int = 20) -> list[SearchHit]:
        """`owner`'s messages holding every word of `query`: ranked by the index when every long word can use it,
        newest first otherwise."""
        terms = terms_of(query)
        if not terms:
            return []
        long_terms = [t for t in terms if len(t) >= 3]
        short = [_like(t) for t in terms if len(t) < 3]
        indexed = bool(long_terms) and self.state().ready
        with self._db.transaction(write=False) as conn:
            if indexed:
                likes = "".join(" AND m.content LIKE ? ESCAPE '\\'" for _ in short)
                rows = conn.execute(
                    "SELECT m.conversation_id, c.title, m.id, m.role, m.content, m.created_at, "
                    f"snippet(search_messages, 0, '{HIT_START}', '{HIT_END}', '…', 24) "
                    "FROM search_messages JOIN messages m ON m.id = search_messages.rowid "
                    "JOIN conversations c ON c.id = m.conversation_id "
                    f"WHERE search_messages MATCH ? AND c.owner IS ?{likes} ORDER BY bm25(search_messages) LIMIT ?",
                    (" AND ".join(_phrase(t) for t in long_terms), owner, *short, limit)).fetchall()
                return [SearchHit(conv, title, message_id, role, snippet if not short else mark(content, terms),
                                  created_at) for conv, title, message_id, role, content, created_at, snippet in rows]
            likes = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in terms)
            rows = conn.execute(
                "SELECT m.conversation_id, c.title, m.id, m.role, m.content, m.created_at FROM messages m "
                f"JOIN conversations c ON c.id = m.conversation_id WHERE c.owner IS ? AND {likes} "
                "ORDER BY m.id DESC LIMIT ?", (owner, *[_like(t) for t in terms], limit)).fetchall()
        return [SearchHit(conv, title, message_id, role, mark(content, terms), created_at)
                for conv, title, message_id, role, content, created_at in rows]
