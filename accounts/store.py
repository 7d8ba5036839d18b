"""Built-in accounts, their sign-ins (session tokens) and API keys, in an SQLite file of their own.

Tokens and keys are long random strings, stored as SHA-256 digests only: a copy of the file signs no one in.
Passwords are stored as scrypt hashes (accounts.passwords)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path

from accounts.passwords import check_new_password, dummy_hash, hash_password, verify_password
from accounts.records import ROLES, Account, ApiKeyInfo
from common.database import Database, Migration
from common.errors import StoreError

STEPS = (
    Migration(1, "accounts, their sign-ins and their API keys", (
        """CREATE TABLE accounts (
            name TEXT PRIMARY KEY,
            password_hash TEXT,
            role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
            disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE sign_ins (
            token_hash TEXT PRIMARY KEY,
            name TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            ended_at REAL
        )""",
        "CREATE INDEX sign_ins_by_name ON sign_ins (name)",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            label TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            last_used REAL,
            revoked_at REAL
        )""",
    )),
)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,127}")
KEY_PREFIX = "mc"
LABEL_CHARS = 60
LAST_USE_EVERY_S = 60.0  # a key's "last used" is written at most this often (not once per request)
_ACCOUNT_COLUMNS = "name, role, disabled, password_hash IS NOT NULL, created_at"


def account_name(raw: str) -> str:
    """An account's name as stored: trimmed, lower case; letters, digits and . _ @ + - (an e-mail address fits)."""
    name = raw.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise StoreError(f"{raw!r} is not an account name: use 1 to 128 letters, digits and . _ @ + -, starting "
                         "with a letter or digit.")
    return name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _account(row: tuple) -> Account:
    name, role, disabled, has_password, created_at = row
    return Account(name, role, bool(disabled), bool(has_password), created_at)


class AccountStore:
    """Accounts in one SQLite file (MOE_CHAT_ACCOUNTS_DB), shared by the page, the sign-in routes and the API."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, STEPS, "accounts database", "MOE_CHAT_ACCOUNTS_DB")
        self.path = self._db.path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _unknown(name: str) -> StoreError:
        return StoreError(f"There is no account {name!r}; `python -m accounts list` shows them.")

    # ---- accounts
    def add(self, name: str, password: str | None, role: str = "user") -> Account:
        """A new account; with a password for built-in sign-in, without one for a person a proxy or an identity
        provider names."""
        name = account_name(name)
        if role not in ROLES:
            raise StoreError(f"A role is one of {list(ROLES)}, not {role!r}.")
        stored = None
        if password is not None:
            check_new_password(password)
            stored = hash_password(password)
        with self._db.transaction(write=True) as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"There is already an account {name!r}.")
            conn.execute("INSERT INTO accounts (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                         (name, stored, role, time.time()))
        return self.get(name)

    def ensure(self, name: str) -> Account:
        """The account of a person named by a proxy or an identity provider, made (as a user) on first sight."""
        name = account_name(name)
        with self._db.transaction(write=True) as conn:
            conn.execute("INSERT OR IGNORE INTO accounts (name, role, created_at) VALUES (?, 'user', ?)",
                         (name, time.time()))
        return self.get(name)

    def get(self, name: str) -> Account | None:
        with self._db.transaction(write=False) as conn:
            row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE name = ?",
                               (name.strip().lower(),)).fetchone()
        return _account(row) if row else None

    def accounts(self) -> list[Account]:
        with self._db.transaction(write=False) as conn:
            return [_account(r) for r in conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY name")]

    def has_built_in(self) -> bool:
        """Whether any account signs in with a password here (then the app asks everyone to sign in)."""
        with self._db.transaction(write=False) as conn:
            return conn.execute("SELECT 1 FROM accounts WHERE password_hash IS NOT NULL LIMIT 1").fetchone() is not None

    def _change(self, name: str, sql: str, args: tuple, end_sign_ins: bool = False) -> None:
        name = account_name(name)
        with self._db.transaction(write=True) as conn:
            if not conn.execute(sql, (*args, name)).rowcount:
                raise self._unknown(name)
            if end_sign_ins:
                conn.execute("UPDATE sign_ins SET ended_at = ? WHERE name = ? AND ended_at IS NULL",
                             (time.time(), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (signed out everywhere, keys refused) or enable an account."""
        self._change(name, "UPDATE accounts SET disabled = ? WHERE name = ?", (int(disabled),), end_sign_ins=disabled)

    def set_password(self, name: str, password: str) -> None:
        """A new password; every sign-in of the account ends."""
        check_new_password(password)
        self._change(name, "UPDATE accounts SET password_hash = ? WHERE name = ?", (hash_password(password),),
                     end_sign_ins=True)

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise StoreError(f"A role is one of {list(ROLES)}, not {role!r}.")
        self._change(name, "UPDATE accounts SET role = ? WHERE name = ?", (role,))

    def remove(self, name: str) -> None:
        """Remove the account with its sign-ins and keys (its conversations stay in the conversation database)."""
        self._change(name, "DELETE FROM accounts WHERE name = ?", ())

    # ---- passwords and sign-ins
    def check_password(self, name: str, password: str) -> tuple[Account | None, str]:
        """(the account, "signed in") when `password` is its password, else (None, why not). Always one scrypt
        hash, whatever the name, so the time taken tells nothing."""
        try:
            name = account_name(name)
        except StoreError:
            name = ""
        with self._db.transaction(write=False) as conn:
            row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE name = ?",
                               (name,)).fetchone()
        stored = row[-1] if row and row[-1] else dummy_hash()
        matches = verify_password(password, stored)
        if row is None:
            return None, "unknown name"
        if row[-1] is None:
            return None, "account without a password (signs in through a proxy or an identity provider)"
        if not matches:
            return None, "wrong password"
        account = _account(row[:-1])
        if account.disabled:
            return None, "account disabled"
        return account, "signed in"

    def start_sign_in(self, name: str, lifetime_s: float) -> str:
        """A fresh session token for `name` (to be put in a cookie); only its digest is kept."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._db.transaction(write=True) as conn:
            conn.execute("INSERT INTO sign_ins (token_hash, name, created_at, expires_at) VALUES (?, ?, ?, ?)",
                         (_digest(token), account_name(name), now, now + lifetime_s))
        return token

    def signed_in(self, token: str | None) -> Account | None:
        """The account a session token belongs to, if it has not ended, expired, or been disabled."""
        if not token:
            return None
        with self._db.transaction(write=False) as conn:
            row = conn.execute("SELECT a.name, a.role, a.disabled, a.password_hash IS NOT NULL, a.created_at "
                               "FROM sign_ins s JOIN accounts a ON a.name = s.name "
                               "WHERE s.token_hash = ? AND s.ended_at IS NULL AND s.expires_at > ?",
                               (_digest(token), time.time())).fetchone()
        account = _account(row) if row else None
        return account if account is not None and not account.disabled else None

    def sign_out(self, token: str | None) -> bool:
        """End one sign-in (the cookie's); True when there was one to end."""
        if not token:
            return False
        with self._db.transaction(write=True) as conn:
            return bool(conn.execute("UPDATE sign_ins SET ended_at = ? WHERE token_hash = ? AND ended_at IS NULL",
                                     (time.time(), _digest(token))).rowcount)

    def end_sign_ins(self, name: str) -> int:
        """Sign the account out everywhere; returns how many sign-ins ended."""
        with self._db.transaction(write=True) as conn:
            return conn.execute("UPDATE sign_ins SET ended_at = ? WHERE name = ? AND ended_at IS NULL",
                                (time.time(), account_name(name))).rowcount

    # ---- API keys
    def create_key(self, name: str, label: str) -> tuple[ApiKeyInfo, str]:
        """A new API key for `name`: its description, and the key itself (shown once, never stored)."""
        label = " ".join(label.split())[:LABEL_CHARS] or "key"
        key_id = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._db.transaction(write=True) as conn:
            conn.execute("INSERT INTO api_keys (key_id, name, label, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                         (key_id, account_name(name), label, _digest(secret), now))
        return ApiKeyInfo(key_id, label, now, None, False), secret

    def keys(self, name: str) -> list[ApiKeyInfo]:
        """An account's keys, the newest first."""
        with self._db.transaction(write=False) as conn:
            rows = conn.execute("SELECT key_id, label, created_at, last_used, revoked_at IS NOT NULL FROM api_keys "
                                "WHERE name = ? ORDER BY created_at DESC", (account_name(name),)).fetchall()
        return [ApiKeyInfo(key_id, label, created, used, bool(revoked)) for key_id, label, created, used, revoked
                in rows]

    def revoke_key(self, name: str, key_id: str) -> bool:
        """Revoke one of `name`'s keys (another account's key id changes nothing); True when one was revoked."""
        with self._db.transaction(write=True) as conn:
            return bool(conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND name = ? "
                                     "AND revoked_at IS NULL", (time.time(), key_id, account_name(name))).rowcount)

    def key_owner(self, secret: str) -> Account | None:
        """The account whose live key `secret` is (its last use noted), or None."""
        if not secret.startswith(KEY_PREFIX + "_"):
            return None
        now = time.time()
        with self._db.transaction(write=True) as conn:
            row = conn.execute("SELECT k.key_id, k.last_used, a.name, a.role, a.disabled, a.password_hash IS NOT NULL, "
                               "a.created_at FROM api_keys k JOIN accounts a ON a.name = k.name "
                               "WHERE k.key_hash = ? AND k.revoked_at IS NULL", (_digest(secret),)).fetchone()
            if row is None:
                return None
            key_id, last_used, *account_row = row
            if last_used is None or now - last_used >= LAST_USE_EVERY_S:
                conn.execute("UPDATE api_keys SET last_used = ? WHERE key_id = ?", (now, key_id))
        account = _account(tuple(account_row))
        return None if account.disabled else account
