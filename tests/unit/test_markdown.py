"""Dollar signs in answers: prices and shell variables stay text, display math still renders, code is untouched."""

from __future__ import annotations

from components.markdown import chat_markdown, escape_dollars


def test_prices_and_variables_are_text():
    assert escape_dollars("$5 and $10") == r"\$5 and \$10"
    assert escape_dollars("echo $HOME") == r"echo \$HOME"


def test_display_math_is_kept():
    assert escape_dollars("$$E = mc^2$$") == "$$E = mc^2$$"
    assert escape_dollars("costs $5; $$x^2$$") == r"costs \$5; $$x^2$$"


def test_code_is_left_verbatim():
    assert escape_dollars("run `echo $PATH` now, $3") == r"run `echo $PATH` now, \$3"
    fenced = "```bash\nexport A=$B\n```\nthat costs $1"
    assert escape_dollars(fenced) == "```bash\nexport A=$B\n```\nthat costs \\$1"
    assert escape_dollars("```\nunfinished $x") == "```\nunfinished $x"  # a block still streaming


def test_already_escaped_dollars_are_not_doubled():
    assert escape_dollars(r"\$5") == r"\$5"


def test_images_become_links_that_load_nothing_and_code_keeps_them_verbatim():
    drawn = chat_markdown("a ![cat](http://x/c.png) b ![ref][1] c `![kept](u)` \\![escaped](v)\n"
                          "```\n![in code](w)\n```")
    assert "[🖼 cat](http://x/c.png)" in drawn and "[🖼 ref][1]" in drawn
    assert "`![kept](u)`" in drawn and "![in code](w)" in drawn and "\\![escaped](v)" in drawn
