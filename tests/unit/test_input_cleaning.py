"""Bad input from the browser: control characters, invalid UTF-8, and messages over the length limit."""

from __future__ import annotations

import pytest

from chat_engine.prompt import check_length, clean_text
from common.errors import InvalidParameterError


def test_control_characters_go_and_line_breaks_stay():
    assert clean_text("a\x00b\x07c\td\r\ne\x1b[31m") == "abc\td\ne[31m"


def test_lone_surrogates_become_replacement_marks():
    cleaned = clean_text("ok \ud800 end")
    cleaned.encode("utf-8")  # would raise UnicodeEncodeError if a surrogate were left
    assert cleaned.startswith("ok ") and cleaned.endswith(" end")


def test_unicode_text_is_untouched():
    text = "你好 👋🏽 مرحبا $5"
    assert clean_text(text) == text


def test_length_limit_is_explained():
    check_length("x" * 10, 10)
    with pytest.raises(InvalidParameterError, match="11 characters; the limit is 10"):
        check_length("x" * 11, 10)
