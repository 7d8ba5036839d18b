"""What is stored about people: accounts, their API keys, and the roles with what each may do."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "user")
# What only an admin may do; everything else (chatting, one's own conversations and keys) every signed-in person may.
ADMIN_ACTIONS = {
    "manage_models": "load, switch, unload or cancel a model, and add model folders or servers",
    "manage_accounts": "manage accounts and their keys",
}


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    disabled: bool
    has_password: bool  # built-in accounts have one; people known from a proxy or an identity provider do not
    created_at: float


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as its owner sees it in the page: never the key itself, which is shown once when made."""

    key_id: str
    label: str
    created_at: float
    last_used: float | None
    revoked: bool
