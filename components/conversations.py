"""The sidebar's list of saved conversations: open, rename, delete, export, import, new."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from components.markdown import plain


@dataclass(frozen=True)
class ConversationChoice:
    """What the user asked of the conversation list this run."""

    open_id: str | None = None
    new: bool = False
    delete_id: str | None = None
    rename: tuple[str, str] | None = None  # (id, new title)
    imported: Any = None  # parsed JSON of an uploaded export


def _current_tools(current: Any, export_md: Callable[[str], str], export_json: Callable[[str], dict]) -> \
        tuple[str | None, bool]:
    title = st.text_input("Title", value=current.title, key=f"title_{current.id}")
    left, right = st.columns(2)
    left.download_button("Markdown", lambda: export_md(current.id), file_name=f"{current.id}.md", mime="text/markdown",
                         key="export_md", icon=":material/download:", width="stretch")
    right.download_button("JSON", lambda: json.dumps(export_json(current.id), ensure_ascii=False, indent=2),
                          file_name=f"{current.id}.json", mime="application/json", key="export_json",
                          icon=":material/download:", width="stretch")
    with st.popover("Delete", icon=":material/delete:", key="delete_popover"):
        st.write(f"Delete **{plain(current.title)}** and all its messages? This cannot be undone.")
        delete = st.button("Delete for good", key="delete_confirm", type="primary")
    return (title.strip() if title.strip() and title.strip() != current.title else None), delete


def render(summaries: Sequence[Any], current: Any | None, export_md: Callable[[str], str],
           export_json: Callable[[str], dict]) -> ConversationChoice:
    """New chat, the current conversation's tools, the saved list (newest first) and import."""
    st.subheader("Conversations")
    if st.button("New chat", key="clear_conversation", icon=":material/add_comment:", width="stretch"):
        return ConversationChoice(new=True)
    if current is not None:
        new_title, delete = _current_tools(current, export_md, export_json)
        if delete:
            return ConversationChoice(delete_id=current.id)
        if new_title:
            return ConversationChoice(rename=(current.id, new_title))
    for summary in summaries:
        is_current = current is not None and summary.id == current.id
        label = f"{plain(summary.title or 'Untitled')} ({summary.message_count})"
        if st.button(label, key=f"open_{summary.id}", type="primary" if is_current else "tertiary",
                     width="stretch", disabled=is_current):
            return ConversationChoice(open_id=summary.id)
    upload = st.file_uploader("Import a JSON export", type=["json"], key="import_file")
    if upload is not None and st.button("Import", key="import_confirm"):
        try:
            return ConversationChoice(imported=json.loads(upload.getvalue().decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            st.error(f"{upload.name} is not a JSON export: {exc}", icon=":material/error:")
        except RecursionError:
            st.error(f"{upload.name} is nested too deeply to be a moe-chat export.", icon=":material/error:")
    return ConversationChoice()
