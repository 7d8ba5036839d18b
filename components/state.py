"""Every session-state key of the page (besides widget keys), declared and initialised in one place."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

MESSAGES = "messages"  # list[{"role", "content"}], the conversation shown and sent
MODEL_CHOICE = "model_choice"  # registry id picked in the sidebar
PENDING_CHOICE = "pending_model_choice"  # id to select on the next run (a widget's key can't be set after it draws)
LOCAL_FOLDERS = "local_folders"  # model folders the user added in this session
SERVERS = "servers"  # (address, served model, key variable) of model servers the user added in this session
SERVER_MODELS = "server_models"  # (address, key variable, [served model names]) last listed in "Add a model server"
AUTOLOADED = "autoloaded"  # the default model was loaded once for this session
NOTICE = "notice"  # a message to show once on the next run
CONVERSATION_ID = "conversation_id"  # the stored conversation this session shows, None before its first message
CONVERSATION_MODEL = "conversation_model"  # the model id the conversation was held with
RESTORED = "restored_from_url"  # the URL's conversation was reopened once for this session
RESTORED_PARAMS = "restored_params"  # generation parameters of a reopened conversation, for the sidebar
PENDING_REPLY = "pending_reply"  # the last user message awaits an answer (after Regenerate or Edit)
EDITING = "editing"  # the id of the user message open for editing, or None
LEAF = "branch_leaf"  # the id of the last message of the branch this tab shows (its own place in the tree)
RELOAD = "reload_branch"  # this tab wrote to the conversation: the next run reads its branch again
MARKED = "search_mark"  # the id of the message a search hit opened, marked where it is drawn
REVISION = "conversation_revision"  # the stored revision this tab's view of the conversation was built on
UNSENT = "unsent"  # (text, why): a message given back on the next run (the view was reloaded first)
HISTORY_SHOWN = "history_shown"  # how many of the latest messages are drawn (long conversations)
SYSTEM_PROMPT = "system_prompt"  # the system prompt box (a widget key the journal also sets on reopening)
PARAMS_FOR_MODEL = "gen_defaults_for"  # the model whose defaults the generation widgets hold
GATE_OK = "authenticated"  # the page password was given in this session
REMEMBER_PASS = "remember_password"  # the password was just given: the next run has the browser remember it
RECORD_ROUTING = "record_routing"  # the sidebar switch: record which experts each token of an answer used


def init(session: MutableMapping[str, Any], default_model_id: str) -> None:
    """Give every key its starting value unless it already has one."""
    defaults: dict[str, Any] = {
        MESSAGES: [],
        MODEL_CHOICE: default_model_id,
        LOCAL_FOLDERS: [],
        SERVERS: [],
        AUTOLOADED: False,
        NOTICE: None,
        CONVERSATION_ID: None,
        CONVERSATION_MODEL: None,
        EDITING: None,
    }
    for key, value in defaults.items():
        if key not in session:
            session[key] = value
