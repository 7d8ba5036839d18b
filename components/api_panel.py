"""The sidebar's word on the OpenAI-compatible API: whether it is on, where, and how to call it."""

from __future__ import annotations

from urllib.parse import urlsplit

import streamlit as st


def base_url(page_url: str | None) -> str:
    """The API's address as the browser reaches the page (through a port forward or a tunnel alike): the routes sit
    at the server's root, whatever path the page has."""
    parts = urlsplit(page_url or "http://localhost:6006/")
    return f"{parts.scheme}://{parts.netloc}/v1"


def render(enabled: bool, model_id: str | None) -> None:
    with st.expander("API (OpenAI-compatible)"):
        if not enabled:
            st.caption("Off. Start the app with `MOE_CHAT_API_KEY=<a key of your choosing>` (or `api_key` in "
                       "`.streamlit/secrets.toml`) to serve the loaded model at `/v1` on this same port.")
            return
        url = base_url(st.context.url)
        model = model_id or "<load a model first>"
        st.caption(f"On, for the loaded model, at `{url}`; requests wait in line with this page's users. "
                   "The key is the app's MOE_CHAT_API_KEY (the page password does not open it).")
        st.code(f"curl {url}/chat/completions -H \"Authorization: Bearer $MOE_CHAT_API_KEY\" \\\n"
                f"  -H 'Content-Type: application/json' \\\n"
                f"  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
                language="bash")
        st.code(f"from openai import OpenAI\n\nclient = OpenAI(base_url=\"{url}\", api_key=\"<MOE_CHAT_API_KEY>\")\n"
                f"reply = client.chat.completions.create(model=\"{model}\",\n"
                f"    messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n"
                "print(reply.choices[0].message.content)", language="python")
