"""Built-in accounts: password hashes, sign-ins, API keys, roles, and the `python -m accounts` command."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest

from accounts import passwords
from accounts.cli import main
from accounts.people import ACCOUNTS, LOCAL, NONE, OIDC, PROXY, Person, choose_mode
from accounts.store import AccountStore
from common.errors import MoEChatError, NotAllowedError, StoreError
from conversations.store import ConversationStore


@pytest.fixture
def accounts(tmp_path):
    with AccountStore(tmp_path / "accounts.db") as store:
        yield store


def test_a_password_is_kept_as_a_memory_hard_hash_and_checked_in_constant_time(accounts):
    accounts.add("Ada", "a long password", role="admin")
    passwords.dummy_hash()  # made once per process, as the server does at start
    (stored,) = sqlite3.connect(accounts.path).execute("SELECT password_hash FROM accounts").fetchone()
    assert stored.startswith("scrypt$131072$8$1$") and "a long password" not in stored
    assert passwords.DEFAULT_COST.memory_bytes == 128 * 2 ** 20
    started = time.perf_counter()
    account, why = accounts.check_password("ada", "a long password")
    right_s = time.perf_counter() - started
    assert account.name == "ada" and account.role == "admin" and why == "signed in"
    started = time.perf_counter()
    assert accounts.check_password("nobody", "a long password") == (None, "unknown name")
    unknown_s = time.perf_counter() - started
    assert accounts.check_password("ada", "a wrong password") == (None, "wrong password")
    print(f"scrypt n=2^17 r=8 p=1: {right_s:.2f} s for the right password, {unknown_s:.2f} s for an unknown name")
    assert unknown_s > right_s / 3  # an unknown name costs a hash too: the timing does not tell who exists


def test_short_passwords_and_odd_names_are_refused(accounts):
    with pytest.raises(MoEChatError, match="at least 8 characters"):
        accounts.add("ada", "short")
    with pytest.raises(StoreError, match="not an account name"):
        accounts.add("ada smith", "a long password")
    accounts.add("ada", "a long password")
    with pytest.raises(StoreError, match="already an account"):
        accounts.add("ADA", "another long one")


def test_a_sign_in_token_is_stored_hashed_and_ends_with_sign_out_disable_reset_and_expiry(accounts):
    accounts.add("ada", "a long password")
    token = accounts.start_sign_in("ada", lifetime_s=3600)
    rows = sqlite3.connect(accounts.path).execute("SELECT token_hash FROM sign_ins").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(),)]
    assert accounts.signed_in(token).name == "ada"
    assert accounts.sign_out(token) and accounts.signed_in(token) is None
    assert not accounts.sign_out(token)

    token = accounts.start_sign_in("ada", 3600)
    accounts.set_disabled("ada", True)
    assert accounts.signed_in(token) is None
    assert accounts.check_password("ada", "a long password") == (None, "account disabled")
    accounts.set_disabled("ada", False)
    assert accounts.signed_in(token) is None  # disabling ended it for good

    token = accounts.start_sign_in("ada", 3600)
    accounts.set_password("ada", "a new long password")
    assert accounts.signed_in(token) is None
    assert accounts.start_sign_in("ada", -1) and accounts.signed_in(accounts.start_sign_in("ada", -1)) is None


def test_api_keys_are_shown_once_stored_hashed_revocable_and_only_by_their_owner(accounts):
    accounts.add("ada", "a long password")
    accounts.add("bob", "b long password")
    info, key = accounts.create_key("ada", "  laptop   script ")
    assert info.label == "laptop script" and key.startswith(f"mc_{info.key_id}_")
    assert key not in open(accounts.path, "rb").read().decode("latin1")
    assert accounts.key_owner(key).name == "ada"
    assert accounts.keys("ada")[0].last_used is not None
    assert not accounts.revoke_key("bob", info.key_id)  # another account's key id changes nothing
    assert accounts.key_owner(key) is not None
    assert accounts.revoke_key("ada", info.key_id)
    assert accounts.key_owner(key) is None and accounts.keys("ada")[0].revoked
    assert accounts.key_owner("mc_nothing_here") is None and accounts.key_owner("sk-other") is None


def test_roles_allow_admins_everything_and_users_their_own_things():
    user, admin = Person("bob", "user"), Person("ada", "admin")
    assert admin.may("manage_models") and LOCAL.may("manage_models") and LOCAL.may("manage_accounts")
    assert user.may("chat") and not user.may("manage_models")
    with pytest.raises(NotAllowedError, match="Only an admin may load, switch, unload"):
        user.require("manage_models")
    assert user.line_client("tab 1") == "user bob" and LOCAL.line_client("tab 1") == "tab 1"


def test_the_identity_source_is_chosen_in_order():
    assert choose_mode(True, True, True) == PROXY
    assert choose_mode(False, True, True) == OIDC
    assert choose_mode(False, False, True) == ACCOUNTS
    assert choose_mode(False, False, False) == NONE


def test_the_command_manages_accounts_and_hands_over_old_conversations(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOE_CHAT_DB", str(tmp_path / "conversations.db"))
    with ConversationStore(tmp_path / "conversations.db") as store:
        store.add_message(store.create(), "user", "from before accounts")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("correct horse battery\n"))
    assert main(["add", "ada", "--admin", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert "restart the app" in out and "1 conversation(s) saved before accounts" in out
    assert main(["list"]) == 0 and "ada\tadmin\tactive\tpassword" in capsys.readouterr().out
    assert main(["hand-over", "ada"]) == 0 and "Gave 1 conversation(s)" in capsys.readouterr().out
    with ConversationStore(tmp_path / "conversations.db") as store:
        assert [c.title for c in store.for_owner("ada").list_conversations()] == ["from before accounts"]
        assert store.list_conversations() == []
    assert main(["role", "ada", "user"]) == 0
    assert main(["disable", "ada"]) == 0 and main(["list"]) == 0
    assert "ada\tuser\tdisabled" in capsys.readouterr().out
    assert main(["remove", "nobody"]) == 1 and "no account 'nobody'" in capsys.readouterr().err
    assert main(["remove", "ada"]) == 0
    assert AccountStore(tmp_path / "accounts.db").accounts() == []
