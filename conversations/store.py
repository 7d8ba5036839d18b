"""Saved conversations: a thread-safe SQLite store with a versioned schema, JSON/Markdown export and JSON import."""

from __future__ import annotations

import copy
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.database import Database
from common.errors import MoEChatError, StaleConversationError, StoreError
from common.messages import ROLES
from conversations.export import FORMAT, VERSION, FormatError, parse_document, to_document, to_markdown
from conversations.migrations import MIGRATIONS
from conversations.records import Conversation, ConversationSummary, StoredMessage
from conversations.search import IndexState, SearchHit, SearchIndex
from conversations.tree import Tree

DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 60
CONVERSATION_COLUMNS = ("id, title, model_id, system_prompt, params, created_at, updated_at, revision, active_leaf, "
                        "pinned, folder")
_SUMMARY_COLUMNS = ("c.id, c.title, c.model_id, c.updated_at, "
                    "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id), c.pinned, c.folder")
MESSAGE_COLUMNS = "role, content, stats, partial, created_at"
LEAF = "leaf"  # add's default parent: the message the conversation was left at
MAX_FOLDER_CHARS = 40
# A message holds at most this much text: a 32k-token answer is about 130k characters. Longer text (from a server
# that never stopped) is cut when written, and cut when read from a database written before this limit, so no
# conversation ever takes longer to open than one at the limit.
MAX_MESSAGE_CHARS = 262_144
# Only a message of over MAX_MESSAGE_CHARS bytes is cut as it is read (SQLite's substr and length stop at a NUL,
# which an ordinary message may hold: it is read whole).
_READ_COLUMNS = ("id, parent_id, role, "
                 "CASE WHEN length(CAST(content AS BLOB)) > :cap THEN substr(content, 1, :cap + 1) ELSE content END, "
                 "CASE WHEN length(CAST(content AS BLOB)) > :cap THEN length(content) END, stats, partial, created_at")


def kept_text(content: str, length: int | None = None) -> str:
    """`content` cut to MAX_MESSAGE_CHARS with a line saying so (`length`: the whole text's, when only the start
    was read)."""
    length = len(content) if length is None else length
    if length <= MAX_MESSAGE_CHARS:
        return content
    return (content[:MAX_MESSAGE_CHARS] + f"\n\n[{length - MAX_MESSAGE_CHARS:,} more characters were not kept: a "
            f"message holds at most {MAX_MESSAGE_CHARS:,}.]")




def title_from(content: str) -> str:
    """A one-line title of at most TITLE_LENGTH characters from a message, cut at a word where it can be."""
    line = " ".join(content.split())
    if len(line) <= TITLE_LENGTH:
        return line or DEFAULT_TITLE
    cut = line[:TITLE_LENGTH - 1]
    if cut.rfind(" ") >= TITLE_LENGTH // 2:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip() + "…"


def _to_json(value: Mapping[str, Any] | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(dict(value), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must hold only JSON values (text, numbers, true/false, lists, objects): {exc}.") \
            from exc


def _check_message(role: str, content: str) -> None:
    if role not in ROLES:
        raise StoreError(f"Unknown message role {role!r}; a saved message is one of {list(ROLES)}.")
    if not isinstance(content, str):
        raise StoreError(f"Message content must be text; got {type(content).__name__}.")


def _message(row: tuple, tree: Tree) -> StoredMessage:
    message_id, parent_id, role, content, length, stats, partial, created_at = row
    return StoredMessage(role, kept_text(content, length), json.loads(stats) if stats is not None else None,
                         bool(partial), created_at, message_id, parent_id, tree.siblings(message_id))


def _leaf_in(tree: Tree, wanted: int | None, active: int | None) -> int | None:
    """Where to show a conversation: the wanted message's newest branch if it is still there, else the active leaf,
    else the newest message."""
    for candidate in (wanted, active):
        if candidate is not None and candidate in tree:
            return tree.newest_leaf(candidate)
    return tree.newest_leaf()


@dataclass(frozen=True)
class Added:
    """A message just added: its id, and whether it started a new branch beside others."""

    id: int
    branched: bool


class ConversationStore:
    """Conversations and their messages in one SQLite file, shared by every browser session's thread.

    Each conversation has an owner: an account's name, or none (the one local user of a server without accounts).
    A store answers for one owner (`for_owner`): another owner's conversation is simply not found, whatever the
    operation. The schema is migrated forward on open (common.database).
    """

    def __init__(self, path: Path, owner: str | None = None) -> None:
        self._db = Database(path, MIGRATIONS, "conversation database", "MOE_CHAT_DB")
        self.path, self.owner = self._db.path, owner
        self.index = SearchIndex(self._db)

    def for_owner(self, owner: str | None) -> ConversationStore:
        """The same database, answering for `owner`'s conversations only."""
        view = copy.copy(self)
        view.owner = owner
        return view

    def close(self) -> None:
        """Close the database; the store (and every owner's view of it) cannot be used afterwards."""
        self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._db.transaction(write) as conn:
            yield conn

    @staticmethod
    def _unknown(conv_id: str) -> StoreError:
        return StoreError(f"No saved conversation {conv_id!r}: it may have been deleted (perhaps in another tab). "
                          f"Pick one from the list or start a new chat.")

    def _title_state(self, conn: sqlite3.Connection, conv_id: str) -> tuple[str, bool]:
        row = conn.execute("SELECT title, title_edited FROM conversations WHERE id = ? AND owner IS ?",
                           (conv_id, self.owner)).fetchone()
        if row is None:
            raise self._unknown(conv_id)
        return row[0], bool(row[1])

    def _insert_conversation(self, conn: sqlite3.Connection, title: str, title_edited: bool, model_id: str | None,
                             system_prompt: str, params_json: str, created_at: float, updated_at: float) -> str:
        for _ in range(8):
            conv_id = secrets.token_urlsafe(8)  # 11 URL-safe characters, 64 random bits
            if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone() is None:
                conn.execute("INSERT INTO conversations (id, title, title_edited, model_id, system_prompt, params, "
                             "created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (conv_id, title, int(title_edited), model_id, system_prompt, params_json, created_at,
                              updated_at, self.owner))
                return conv_id
        raise StoreError("Could not find a free conversation id; try again.")  # 8 collisions of 64 random bits

    def create(self, model_id: str | None = None, system_prompt: str = "", params: Mapping[str, Any] | None = None,
               title: str | None = None) -> str:
        """Start an empty conversation and return its id (safe to put in a URL)."""
        params_json = _to_json(params or {}, "params")
        named = " ".join((title or "").split())
        now = time.time()
        with self._transaction(write=True) as conn:
            return self._insert_conversation(conn, named or DEFAULT_TITLE, bool(named), model_id, system_prompt,
                                             params_json, now, now)

    def list_conversations(self, limit: int = 200, folder: str | None = None) -> list[ConversationSummary]:
        """Pinned conversations first, then the most recently active; only one folder's with `folder`."""
        if limit < 1:
            raise StoreError(f"limit must be at least 1; got {limit}.")
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE c.owner IS ? AND (? IS NULL OR c.folder = ?) "
                "ORDER BY c.pinned DESC, c.updated_at DESC, c.rowid DESC LIMIT ?",
                (self.owner, folder, folder, limit)).fetchall()
        return [ConversationSummary(*row[:5], pinned=bool(row[5]), folder=row[6]) for row in rows]

    def folders(self) -> list[str]:
        """The folders this owner's conversations are in, by name."""
        with self._transaction(write=False) as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT folder FROM conversations WHERE owner IS ? AND "
                                                   "folder != '' ORDER BY folder", (self.owner,))]

    def summary(self, conv_id: str) -> ConversationSummary | None:
        """The list row of one conversation (cheap: no messages read), or None if there is no such id."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE c.id = ? AND c.owner IS ?",
                               (conv_id, self.owner)).fetchone()
        return ConversationSummary(*row[:5], pinned=bool(row[5]), folder=row[6]) if row else None

    def revision(self, conv_id: str) -> int | None:
        """How many times the conversation's messages were added to or deleted (cheap), or None if it is gone."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT revision FROM conversations WHERE id = ? AND owner IS ?",
                               (conv_id, self.owner)).fetchone()
        return row[0] if row else None

    def _tree(self, conn: sqlite3.Connection, conv_id: str) -> Tree:
        return Tree.of(conn.execute("SELECT id, parent_id FROM messages WHERE conversation_id = ?", (conv_id,)))

    def get(self, conv_id: str, leaf: int | None = None) -> Conversation | None:
        """The conversation with the messages of one branch in order, or None if there is no such id.

        The branch ends at `leaf` (a tab's own place) when it is still there, else where the conversation was left
        (its active leaf), else at its newest message."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND owner IS ?",
                               (conv_id, self.owner)).fetchone()
            if row is None:
                return None
            tree = self._tree(conn, conv_id)
            active = _leaf_in(tree, leaf, row[8])
            messages = conn.execute(
                f"WITH RECURSIVE up(id) AS (SELECT :leaf UNION ALL SELECT m.parent_id FROM messages m JOIN up "
                f"ON m.id = up.id WHERE m.parent_id IS NOT NULL) SELECT {_READ_COLUMNS} FROM messages "
                "WHERE id IN up ORDER BY id", {"cap": MAX_MESSAGE_CHARS, "leaf": active}).fetchall()
        conv_id, title, model_id, system_prompt, params, created_at, updated_at, revision, _, pinned, folder = row
        return Conversation(conv_id, title, model_id, system_prompt, json.loads(params), created_at, updated_at,
                            tuple(_message(m, tree) for m in messages), revision, active, tree.leaves(),
                            bool(pinned), folder)

    def _check_revision(self, conn: sqlite3.Connection, conv_id: str, expect: int | None) -> None:
        if expect is None:
            return
        (revision,) = conn.execute("SELECT revision FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if revision != expect:
            raise StaleConversationError("This conversation was changed in another tab since this one showed it; "
                                         "it is shown again as it is now.")

    def add(self, conv_id: str, role: str, content: str, stats: Mapping[str, Any] | None = None,
            partial: bool = False, created_at: float | None = None, parent: int | None | str = LEAF) -> Added:
        """Add a message under `parent` (LEAF: under the message the conversation was left at, None: as a first
        message) and leave the conversation at it. A parent that already has children gets a new branch: that is
        how Edit and Regenerate keep what they replace, and how a tab that showed an older state never writes over
        another's. The first user message names a conversation never renamed."""
        _check_message(role, content)
        content = kept_text(content)
        stats_json = _to_json(stats, "stats")
        now = time.time() if created_at is None else created_at
        with self._transaction(write=True) as conn:
            title, title_edited = self._title_state(conn, conv_id)
            if parent == LEAF:
                (parent,) = conn.execute("SELECT active_leaf FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            elif parent is not None and not conn.execute("SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?",
                                                         (parent, conv_id)).fetchone():
                raise StoreError("The message this one follows was deleted (perhaps in another tab); the conversation "
                                 "is shown again as it is now.")
            siblings, has_user = conn.execute(
                "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = :c AND parent_id IS :p), "
                "EXISTS (SELECT 1 FROM messages WHERE conversation_id = :c AND role = 'user')",
                {"c": conv_id, "p": parent}).fetchone()
            message_id = conn.execute(f"INSERT INTO messages (conversation_id, parent_id, {MESSAGE_COLUMNS}) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                      (conv_id, parent, role, content, stats_json, int(bool(partial)), now)).lastrowid
            if role == "user" and not has_user and not title_edited:
                title = title_from(content)
            conn.execute("UPDATE conversations SET title = ?, updated_at = ?, revision = revision + 1, active_leaf = ? "
                         "WHERE id = ?", (title, now, message_id, conv_id))
        return Added(message_id, branched=siblings > 0)

    def add_message(self, conv_id: str, role: str, content: str, stats: Mapping[str, Any] | None = None,
                    partial: bool = False, created_at: float | None = None, parent: int | None | str = LEAF) -> int:
        """`add`, returning the new message's id."""
        return self.add(conv_id, role, content, stats, partial, created_at, parent).id

    def update_message(self, conv_id: str, message_id: int, content: str, stats: Mapping[str, Any] | None = None,
                       partial: bool = False) -> None:
        """Rewrite a message (an answer saved while it is still being written)."""
        if not isinstance(content, str):
            raise StoreError(f"Message content must be text; got {type(content).__name__}.")
        content = kept_text(content)
        stats_json = _to_json(stats, "stats")
        with self._transaction(write=True) as conn:
            self._title_state(conn, conv_id)
            changed = conn.execute("UPDATE messages SET content = ?, stats = ?, partial = ? "
                                   "WHERE conversation_id = ? AND id = ?",
                                   (content, stats_json, int(bool(partial)), conv_id, message_id)).rowcount
            if not changed:
                raise StoreError(f"Conversation {conv_id!r} no longer has this message: it was deleted in another "
                                 "tab.")

    def move_to(self, conv_id: str, message_id: int) -> int:
        """Leave the conversation on a branch through `message_id` (a sibling chosen, a search hit opened): the one
        it is on if that holds the message, else the newest under the message; returns the branch's last message."""
        with self._transaction(write=True) as conn:
            self._title_state(conn, conv_id)
            tree = self._tree(conn, conv_id)
            if message_id not in tree:
                raise StoreError("That message was deleted (perhaps in another tab); the conversation is shown again "
                                 "as it is now.")
            (active,) = conn.execute("SELECT active_leaf FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            on_branch = active in tree and message_id in tree.path(active)
            leaf = active if on_branch else tree.newest_leaf(message_id)
            conn.execute("UPDATE conversations SET active_leaf = ? WHERE id = ?", (leaf, conv_id))
        return leaf

    def delete_branch(self, conv_id: str, message_id: int, expect_revision: int | None = None) -> int:
        """Delete a message and everything under it, on every branch, unless another tab changed the conversation
        since `expect_revision`; the conversation is left on its newest remaining branch. Returns how many
        messages were deleted."""
        with self._transaction(write=True) as conn:
            self._title_state(conn, conv_id)
            self._check_revision(conn, conv_id, expect_revision)
            tree = self._tree(conn, conv_id)
            if message_id not in tree:
                raise StoreError("That message was already deleted (perhaps in another tab).")
            gone = tree.subtree(message_id)
            conn.execute("WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT m.id FROM messages m JOIN sub "
                         "ON m.parent_id = sub.id) DELETE FROM messages WHERE id IN sub", (message_id,))
            (active,) = conn.execute("SELECT active_leaf FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            if active in gone or active not in tree:
                remaining = Tree.of((m, p) for m, p in tree.parents.items() if m not in set(gone))
                active = remaining.newest_leaf(tree.parents[message_id])
            conn.execute("UPDATE conversations SET active_leaf = ?, revision = revision + 1, updated_at = ? "
                         "WHERE id = ?", (active, time.time(), conv_id))
        return len(gone)

    def update_settings(self, conv_id: str, model_id: str | None, system_prompt: str,
                        params: Mapping[str, Any]) -> None:
        """Record the model, system prompt and generation parameters the conversation now uses."""
        params_json = _to_json(params, "params")
        with self._transaction(write=True) as conn:
            changed = conn.execute("UPDATE conversations SET model_id = ?, system_prompt = ?, params = ?, "
                                   "updated_at = ? WHERE id = ? AND owner IS ?",
                                   (model_id, system_prompt, params_json, time.time(), conv_id, self.owner)).rowcount
            if not changed:
                raise self._unknown(conv_id)

    def rename(self, conv_id: str, title: str) -> None:
        """Give the conversation a title of the user's own; it keeps its place in the list."""
        named = " ".join(title.split())
        if not named:
            raise StoreError("A conversation title cannot be empty; type a few words.")
        with self._transaction(write=True) as conn:
            if not conn.execute("UPDATE conversations SET title = ?, title_edited = 1 WHERE id = ? AND owner IS ?",
                                (named, conv_id, self.owner)).rowcount:
                raise self._unknown(conv_id)

    def set_pinned(self, conv_id: str, pinned: bool) -> None:
        """Keep the conversation at the top of the list (or not)."""
        self._set(conv_id, "pinned", int(bool(pinned)))

    def set_folder(self, conv_id: str, folder: str) -> None:
        """Put the conversation in a folder (a short name; empty: in none)."""
        named = " ".join(folder.split())
        if len(named) > MAX_FOLDER_CHARS:
            raise StoreError(f"A folder name holds at most {MAX_FOLDER_CHARS} characters; this one has {len(named)}.")
        self._set(conv_id, "folder", named)

    def _set(self, conv_id: str, column: str, value: Any) -> None:
        with self._transaction(write=True) as conn:
            if not conn.execute(f"UPDATE conversations SET {column} = ? WHERE id = ? AND owner IS ?",
                                (value, conv_id, self.owner)).rowcount:
                raise self._unknown(conv_id)

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """This owner's messages holding every word of `query` (see conversations.search)."""
        return self.index.search(query, self.owner, limit)

    def index_state(self) -> IndexState:
        return self.index.state()

    def delete(self, conv_id: str) -> None:
        """Delete the conversation and its messages."""
        with self._transaction(write=True) as conn:
            if not conn.execute("DELETE FROM conversations WHERE id = ? AND owner IS ?",
                                (conv_id, self.owner)).rowcount:
                raise self._unknown(conv_id)

    def _require(self, conv_id: str) -> Conversation:
        conversation = self.get(conv_id)
        if conversation is None:
            raise self._unknown(conv_id)
        return conversation

    def export_json(self, conv_id: str) -> dict[str, Any]:
        """The conversation as a versioned JSON document (see `conversations.export`)."""
        conversation = self._require(conv_id)
        with self._transaction(write=False) as conn:
            tree = self._tree(conn, conv_id)
            rows = conn.execute(f"SELECT {_READ_COLUMNS} FROM messages WHERE conversation_id = :id ORDER BY id",
                                {"cap": MAX_MESSAGE_CHARS, "id": conv_id}).fetchall()
        return to_document(conversation, tuple(_message(row, tree) for row in rows))

    def export_markdown(self, conv_id: str) -> str:
        """The conversation as a Markdown page."""
        return to_markdown(self._require(conv_id))

    def import_json(self, data: Mapping[str, Any], check_params: Callable[[dict[str, Any]], Any] | None = None) -> str:
        """Store an exported document as a new conversation and return its id; nothing is written unless all of it
        is valid (`check_params` raises on generation parameters the app would refuse)."""
        try:
            document = parse_document(data)
            if check_params is not None:
                try:
                    check_params(document.params)
                except MoEChatError as exc:
                    raise FormatError(f"'params': {exc}") from exc
        except FormatError as exc:
            raise StoreError(f"Not a moe-chat conversation export: {str(exc).rstrip('.')}. Import a file made by "
                             f"moe-chat's JSON export (format {FORMAT!r}, version {VERSION}).") from exc
        params_json = _to_json(document.params, "params")
        first_user = next((m.content for m in document.messages if m.role == "user"), None)
        automatic = title_from(first_user) if first_user is not None else DEFAULT_TITLE
        title = " ".join((document.title or "").split()) or automatic
        now = time.time()
        with self._transaction(write=True) as conn:
            conv_id = self._insert_conversation(conn, title, title != automatic, document.model_id,
                                                document.system_prompt, params_json,
                                                now if document.created_at is None else document.created_at, now)
            stored: dict[Any, int] = {}  # the file's ids to the new rows' (parents come first: checked on parsing)
            for m in document.messages:
                stored[m.id] = conn.execute(
                    f"INSERT INTO messages (conversation_id, parent_id, {MESSAGE_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (conv_id, stored.get(m.parent), m.role, m.content, _to_json(m.stats, "stats"), int(m.partial),
                     now)).lastrowid
            conn.execute("UPDATE conversations SET active_leaf = ? WHERE id = ?",
                         (stored.get(document.active), conv_id))
        return conv_id

    def count_by_owner(self) -> dict[str | None, int]:
        """How many conversations each owner has (None: the local user's, from before accounts), for every owner."""
        with self._transaction(write=False) as conn:
            return dict(conn.execute("SELECT owner, COUNT(*) FROM conversations GROUP BY owner").fetchall())

    def hand_over(self, to_owner: str) -> int:
        """Give this store's owner's conversations to `to_owner`; returns how many moved."""
        if not to_owner:
            raise StoreError("Conversations are handed to an account: give its name.")
        with self._transaction(write=True) as conn:
            return conn.execute("UPDATE conversations SET owner = ? WHERE owner IS ?",
                                (to_owner, self.owner)).rowcount
