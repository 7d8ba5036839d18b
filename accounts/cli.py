"""`python -m accounts`: create, list, disable, re-enable, reset, re-role and remove built-in accounts; sign one out
everywhere; list and revoke its API keys; hand the conversations saved before accounts to one."""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys

from accounts.passwords import DEFAULT_COST
from accounts.store import AccountStore
from common.errors import MoEChatError
from common.settings import Settings
from conversations.store import ConversationStore


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise MoEChatError("The two passwords differ; nothing was changed.")
    return first


def _when(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M") if stamp else "never"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m accounts", description="Manage MoE Chat's built-in accounts (the "
                                "files of MOE_CHAT_ACCOUNTS_DB and MOE_CHAT_DB, as the app reads them).")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create an account (the password is asked for twice)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may load models and manage accounts")
    add.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    sub.add_parser("list", help="every account, its role and state")
    for command, text in (("disable", "sign out everywhere and refuse sign-in and keys"), ("enable", "undo disable"),
                          ("remove", "delete the account, its sign-ins and keys (its conversations stay)"),
                          ("sign-out", "end every sign-in of the account"), ("keys", "the account's API keys"),
                          ("hand-over", "give the conversations saved before accounts to this account")):
        sub.add_parser(command, help=text).add_argument("name")
    reset = sub.add_parser("reset-password", help="a new password; every sign-in ends")
    reset.add_argument("name")
    reset.add_argument("--password-stdin", action="store_true")
    role = sub.add_parser("role", help="make an account an admin or a user")
    role.add_argument("name")
    role.add_argument("role", choices=("admin", "user"))
    revoke = sub.add_parser("revoke-key", help="revoke one of the account's API keys")
    revoke.add_argument("name")
    revoke.add_argument("key_id")
    return p


def run(args: argparse.Namespace, settings: Settings, out=print) -> int:
    with AccountStore(settings.accounts_file()) as accounts:
        if args.command == "add":
            first = not accounts.has_built_in()
            account = accounts.add(args.name, _password(args.password_stdin), "admin" if args.admin else "user")
            out(f"Added {account.name} ({account.role}); its password is kept as an scrypt hash "
                f"(n=2^{DEFAULT_COST.n.bit_length() - 1}, {DEFAULT_COST.memory_bytes >> 20} MiB per hash).")
            if first:
                out("This is the first account: restart the app, which then asks everyone to sign in.")
                with ConversationStore(settings.db) as store:
                    old = store.count_by_owner().get(None, 0)
                if old:
                    out(f"{old} conversation(s) saved before accounts belong to nobody now; "
                        f"`python -m accounts hand-over {account.name}` gives them to {account.name}.")
        elif args.command == "list":
            for a in accounts.accounts():
                sign_in = "password" if a.has_password else "proxy or identity provider"
                out(f"{a.name}\t{a.role}\t{'disabled' if a.disabled else 'active'}\t{sign_in}\t"
                    f"since {_when(a.created_at)}")
        elif args.command in ("disable", "enable"):
            accounts.set_disabled(args.name, args.command == "disable")
            out(f"{args.name} is {args.command}d.")
        elif args.command == "remove":
            accounts.remove(args.name)
            out(f"Removed {args.name}; its conversations stay, and come back if the name is added again.")
        elif args.command == "sign-out":
            out(f"Ended {accounts.end_sign_ins(args.name)} sign-in(s) of {args.name}.")
        elif args.command == "reset-password":
            accounts.set_password(args.name, _password(args.password_stdin))
            out(f"New password for {args.name}; every sign-in of it ended.")
        elif args.command == "role":
            accounts.set_role(args.name, args.role)
            out(f"{args.name} is now a {args.role}.")
        elif args.command == "keys":
            for k in accounts.keys(args.name):
                out(f"{k.key_id}\t{k.label}\tmade {_when(k.created_at)}\tlast used {_when(k.last_used)}\t"
                    f"{'revoked' if k.revoked else 'live'}")
        elif args.command == "revoke-key":
            if not accounts.revoke_key(args.name, args.key_id):
                raise MoEChatError(f"{args.name} has no live key {args.key_id!r}; `keys {args.name}` lists them.")
            out(f"Revoked {args.key_id}.")
        elif args.command == "hand-over":
            if accounts.get(args.name) is None:
                raise MoEChatError(f"There is no account {args.name!r}; add it first.")
            with ConversationStore(settings.db) as store:
                moved = store.hand_over(args.name.strip().lower())
            out(f"Gave {moved} conversation(s) saved before accounts to {args.name}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, Settings.from_env())
    except MoEChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
