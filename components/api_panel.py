"""The sidebar's word on the OpenAI-compatible API: whether it is on, where, and how to call it."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

FRESH_KEY = "api_fresh_key"  # (label, key) of a key just made: shown once, on the next run, then forgotten


@dataclass(frozen=True)
class KeyActions:
    """The signed-in person's own API keys: listed, made (returns its description and the key), revoked."""

    list_keys: Callable[[], list[Any]]
    create: Callable[[str], tuple[Any, str]]
    revoke: Callable[[str], bool]


def _when(stamp: float | None) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M") if stamp else "never"


def render_keys(keys: KeyActions) -> None:
    """Make, list and revoke one's own keys; a new key is shown once."""
    fresh = st.session_state.pop(FRESH_KEY, None)
    if fresh:
        st.success(f"Key **{fresh[0]}**: copy it now, it is not shown again.", icon=":material/key:")
        st.code(fresh[1], language=None)
    label = st.text_input("Name of a new key", key="api_key_label", placeholder="e.g. laptop script")
    if st.button("Create key", key="api_key_create"):
        info, secret = keys.create(label)
        st.session_state[FRESH_KEY] = (info.label, secret)
        st.rerun()
    for key in keys.list_keys():
        state = "revoked" if key.revoked else f"last used {_when(key.last_used)}"
        st.caption(f"**{key.label}** · `{key.key_id}` · made {_when(key.created_at)} · {state}")
        if not key.revoked and st.button("Revoke", key=f"api_key_revoke_{key.key_id}"):
            keys.revoke(key.key_id)
            st.rerun()


def base_url(page_url: str | None) -> str:
    """The API's address as the browser reaches the page (through a port forward or a tunnel alike): the routes sit
    at the server's root, whatever path the page has."""
    parts = urlsplit(page_url or "http://localhost:6006/")
    return f"{parts.scheme}://{parts.netloc}/v1"


def render(enabled: bool, model_id: str | None, keys: KeyActions | None = None) -> None:
    """Whether the API is on and how to call it; with `keys`, the person's own keys (accounts), else the shared one."""
    with st.expander("API (OpenAI-compatible)"):
        if not enabled:
            st.caption("Off. Start the app with `MOE_CHAT_API_KEY=<a key of your choosing>` (or `api_key` in "
                       "`.streamlit/secrets.toml`) to serve the loaded model at `/v1` on this same port.")
            return
        url = base_url(st.context.url)
        model = model_id or "<load a model first>"
        if keys is None:
            st.caption(f"On, for the loaded model, at `{url}`; requests wait in line with this page's users. "
                       "The key is the app's MOE_CHAT_API_KEY (the page password does not open it).")
        else:
            st.caption(f"On, for the loaded model, at `{url}`; a request made with one of your keys is yours: it "
                       "waits in line as you and may do what your role may.")
            render_keys(keys)
        st.code(f"curl {url}/chat/completions -H \"Authorization: Bearer $MOE_CHAT_API_KEY\" \\\n"
                f"  -H 'Content-Type: application/json' \\\n"
                f"  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
                language="bash")
        st.code(f"from openai import OpenAI\n\nclient = OpenAI(base_url=\"{url}\", api_key=\"<MOE_CHAT_API_KEY>\")\n"
                f"reply = client.chat.completions.create(model=\"{model}\",\n"
                f"    messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n"
                "print(reply.choices[0].message.content)", language="python")
