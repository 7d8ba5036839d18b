"""The README is the front door: short, the two commands a new user copies, and a link to every page of the manual."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_the_readme_is_a_front_door_with_the_two_commands():
    assert len(README.splitlines()) <= 150
    blocks = code_blocks(README)
    assert "pip install -r requirements.txt && streamlit run app.py" in blocks  # start the app
    assert "bash scripts/test.sh" in blocks  # run the tests, what CI runs
    assert (ROOT / "scripts" / "test.sh").is_file() and "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_manual_page_is_linked_and_every_link_leads_somewhere():
    linked = set(re.findall(r"\]\((docs/[^)#]+)", README))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"
    for target in linked:
        assert (ROOT / target).is_file(), f"README links to a missing {target}"
    for page in pages:  # links between the pages too
        for target in re.findall(r"\]\(((?:\.\./|docs/)?[\w./-]+\.md)", (ROOT / page).read_text()):
            assert (ROOT / page).parent.joinpath(target).resolve().is_file() or (ROOT / target).is_file(), \
                f"{page} links to a missing {target}"
