"""The sidebar's saved conversations: search, new, the open one's tools (title, pin, folder, export, delete), the
list (pinned first, by folder) and import."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import streamlit as st

from components.markdown import plain
from conversations.search import HIT_END, HIT_START

ALL_FOLDERS = "All conversations"
SEARCH_KEY = "search_query"


@dataclass(frozen=True)
class ConversationChoice:
    """What the user asked of the conversation list this run."""

    open_id: str | None = None
    open_at: int | None = None  # the message a search hit is in: open the branch holding it
    new: bool = False
    delete_id: str | None = None
    rename: tuple[str, str] | None = None  # (id, new title)
    pin: tuple[str, bool] | None = None  # (id, pinned)
    folder: tuple[str, str] | None = None  # (id, folder name; empty: none)
    imported: Any = None  # parsed JSON of an uploaded export


def highlighted(snippet: str) -> str:
    """A search snippet as Markdown: the text exactly as written, each match highlighted."""
    out, rest = [], snippet
    while HIT_START in rest:
        before, _, rest = rest.partition(HIT_START)
        hit, _, rest = rest.partition(HIT_END)
        out += [plain(before), f":orange-background[**{plain(hit)}**]"]
    out.append(plain(rest))
    return " ".join("".join(out).split())


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _search(store: Any) -> ConversationChoice | None:
    """The search box and its hits: title, date, a highlighted snippet, each opening its conversation there."""
    query = st.text_input("Search conversations", key=SEARCH_KEY, placeholder="Words or a phrase, any language",
                          icon=":material/search:")
    if not query.strip():
        return None
    index = store.index_state()
    if not index.available:
        st.caption("This SQLite has no full-text search (FTS5 with trigrams): searching message by message, which "
                   "is slower on a large history.")
    elif index.error:
        st.caption(f"The search index could not be built ({index.error}); searching without it, which is slower.")
    elif not index.ready:
        st.caption(f"The search index is being built ({index.done:,} of {index.total:,} messages); searching "
                   "without it meanwhile, which is slower.")
    hits = store.search(query)
    if not hits:
        st.caption("No message holds all of these words.")
    for n, hit in enumerate(hits):
        with st.container(border=True):
            if st.button(f"{plain(hit.title or 'Untitled')} · {_date(hit.created_at)}", key=f"hit_{n}",
                         type="tertiary", icon=":material/forum:"):
                return ConversationChoice(open_id=hit.conversation_id, open_at=hit.message_id)
            st.markdown(f"{'You' if hit.role == 'user' else 'Answer'}: {highlighted(hit.snippet)}")
    return None


def _current_tools(store: Any, current: Any) -> ConversationChoice | None:
    title = st.text_input("Title", value=current.title, key=f"title_{current.id}")
    pinned = st.toggle("Pinned to the top", value=current.pinned, key=f"pin_{current.id}")
    folder = st.text_input("Folder", value=current.folder, key=f"folder_{current.id}",
                           placeholder="none", help="Conversations in a folder can be listed on their own")
    left, right = st.columns(2)
    left.download_button("Markdown", lambda: store.export_markdown(current.id), file_name=f"{current.id}.md",
                         mime="text/markdown", key="export_md", icon=":material/download:", width="stretch")
    right.download_button("JSON", lambda: json.dumps(store.export_json(current.id), ensure_ascii=False, indent=2),
                          file_name=f"{current.id}.json", mime="application/json", key="export_json",
                          icon=":material/download:", width="stretch")
    with st.popover("Delete", icon=":material/delete:", key="delete_popover"):
        st.write(f"Delete **{plain(current.title)}** and all its messages, on every branch? This cannot be undone.")
        delete = st.button("Delete for good", key="delete_confirm", type="primary")
    if delete:
        return ConversationChoice(delete_id=current.id)
    if title.strip() and title.strip() != current.title:
        return ConversationChoice(rename=(current.id, title.strip()))
    if pinned != current.pinned:
        return ConversationChoice(pin=(current.id, pinned))
    if " ".join(folder.split()) != current.folder:
        return ConversationChoice(folder=(current.id, folder))
    return None


def _import() -> ConversationChoice | None:
    upload = st.file_uploader("Import a JSON export", type=["json"], key="import_file")
    if upload is not None and st.button("Import", key="import_confirm"):
        try:
            return ConversationChoice(imported=json.loads(upload.getvalue().decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            st.error(f"{upload.name} is not a JSON export: {exc}", icon=":material/error:")
        except RecursionError:
            st.error(f"{upload.name} is nested too deeply to be a moe-chat export.", icon=":material/error:")
    return None


def render(store: Any, current: Any | None) -> ConversationChoice:
    """Search, new chat, the current conversation's tools, the saved list and import."""
    st.subheader("Conversations")
    if st.button("New chat", key="clear_conversation", icon=":material/add_comment:", width="stretch"):
        return ConversationChoice(new=True)
    if (found := _search(store)) is not None:
        return found
    if current is not None and (choice := _current_tools(store, current)) is not None:
        return choice
    folders = store.folders()
    folder = st.selectbox("Show", [ALL_FOLDERS, *folders], key="folder_filter") if folders else ALL_FOLDERS
    for summary in store.list_conversations(folder=None if folder == ALL_FOLDERS else folder):
        is_current = current is not None and summary.id == current.id
        label = f"{plain(summary.title or 'Untitled')} ({summary.message_count})"
        if st.button(label, key=f"open_{summary.id}", type="primary" if is_current else "tertiary",
                     width="stretch", disabled=is_current, icon=":material/push_pin:" if summary.pinned else None):
            return ConversationChoice(open_id=summary.id)
    return _import() or ConversationChoice()
