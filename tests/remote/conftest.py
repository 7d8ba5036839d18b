"""The remote tier drives the page with AppTest: the page fixtures come from the page tier. The servers (`tserve`,
`vllm`) are session fixtures of tests/conftest.py, shared with the browser tier."""

from __future__ import annotations

from tests.app.conftest import _fresh_engine, db_path  # noqa: F401 - the page fixtures, for the AppTest pages here
