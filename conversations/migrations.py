"""The conversation database's schema: ordered migration steps, applied forward inside one transaction."""

from __future__ import annotations

from common.database import Migration, check_steps

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
    Migration(4, "an owner per conversation (an account's name; none: the one local user of a server without "
                 "accounts, so every conversation saved before stays where it was)", (
        "ALTER TABLE conversations ADD COLUMN owner TEXT",
        "CREATE INDEX conversations_by_owner ON conversations (owner, updated_at DESC)",
    )),
    Migration(5, "messages as a tree (each knows its parent; a conversation remembers the message it was left at), "
                 "pinned conversations and folders; every conversation becomes one branch with the same path", (
        """CREATE TABLE message_tree (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES message_tree (id),
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at REAL NOT NULL,
            stats TEXT,
            partial INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1))
        )""",
        # Numbered in (conversation, position) order, each message's parent is the one before it in its conversation.
        """WITH numbered AS (SELECT ROW_NUMBER() OVER (ORDER BY conversation_id, position) AS n, * FROM messages)
        INSERT INTO message_tree (id, conversation_id, parent_id, role, content, created_at, stats, partial)
        SELECT n, conversation_id, LAG(n) OVER (PARTITION BY conversation_id ORDER BY position), role, content,
               created_at, stats, partial FROM numbered ORDER BY n""",
        "DROP TABLE messages",
        "ALTER TABLE message_tree RENAME TO messages",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, parent_id)",
        "CREATE INDEX messages_by_parent ON messages (parent_id)",
        "ALTER TABLE conversations ADD COLUMN active_leaf INTEGER",
        "UPDATE conversations SET active_leaf = "
        "(SELECT MAX(id) FROM messages WHERE conversation_id = conversations.id)",
        "ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1))",
        "ALTER TABLE conversations ADD COLUMN folder TEXT NOT NULL DEFAULT ''",
    )),
)
LATEST_VERSION = check_steps(MIGRATIONS)
