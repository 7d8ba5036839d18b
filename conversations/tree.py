"""A conversation's messages as a tree: each message knows only its parent; children, siblings, paths and leaves are
derived here from (id, parent) pairs. Ids grow in creation order, so a parent's id is below its children's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tree:
    """The shape of one conversation: every message's parent, and each parent's children oldest first."""

    parents: dict[int, int | None]
    children: dict[int | None, tuple[int, ...]]

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, int | None]]) -> Tree:
        parents: dict[int, int | None] = {}
        children: dict[int | None, list[int]] = {}
        for message_id, parent in sorted(pairs):
            parents[message_id] = parent
            children.setdefault(parent, []).append(message_id)
        return cls(parents, {parent: tuple(ids) for parent, ids in children.items()})

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.parents

    def siblings(self, message_id: int) -> tuple[int, ...]:
        """The message and its siblings (the children of its parent), oldest first."""
        return self.children.get(self.parents[message_id], ())

    def newest_leaf(self, under: int | None = None) -> int | None:
        """The most recently added message in `under`'s subtree (the whole tree for None): always a leaf, since a
        child is newer than its parent. None for an empty tree."""
        newest, stack = under, list(self.children.get(under, ()))
        while stack:
            message_id = stack.pop()
            newest = message_id if newest is None else max(newest, message_id)
            stack.extend(self.children.get(message_id, ()))
        return newest

    def path(self, leaf: int | None) -> list[int]:
        """The messages from the first one down to `leaf`, in order."""
        path: list[int] = []
        while leaf is not None:
            path.append(leaf)
            leaf = self.parents[leaf]
        return path[::-1]

    def subtree(self, message_id: int) -> list[int]:
        """The message and everything that hangs under it."""
        found, stack = [], [message_id]
        while stack:
            current = stack.pop()
            found.append(current)
            stack.extend(self.children.get(current, ()))
        return found

    def leaves(self) -> int:
        """How many branches the conversation has (its leaves)."""
        return sum(1 for message_id in self.parents if message_id not in self.children)


def tree_problems(ids: list[object], parents: list[object], active: object) -> list[str]:
    """What makes a list of messages (in file order) not a tree: a repeated id, a parent that is not an earlier
    message (which also rules out cycles), an active message that is not there."""
    seen: set[object] = set()
    for index, (message_id, parent) in enumerate(zip(ids, parents, strict=True)):
        if message_id in seen:
            return [f"message {index}: id {message_id!r} is used twice"]
        if parent is not None and parent not in seen:
            return [f"message {index}: its parent {parent!r} is not an earlier message (parents come before their "
                    "children, and a message cannot hang under itself or a later one)"]
        seen.add(message_id)
    if active is not None and active not in seen:
        return [f"'active' names message {active!r}, which is not in the file"]
    if active is None and ids:
        return ["'active' must name the message the conversation was left at"]
    return []
