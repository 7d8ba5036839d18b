"""Imports point one way: the page never touches the ML stack, the engine never touches Streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = {"torch", "transformers", "modelscope", "accelerate", "huggingface_hub", "safetensors", "tokenizers"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_ui_modules_never_import_the_ml_stack():
    for path in [ROOT / "app.py", *sorted((ROOT / "components").glob("*.py"))]:
        assert not imported_roots(path) & ML, f"{path.name} imports {imported_roots(path) & ML}"


def test_engine_never_imports_streamlit():
    for package in ("model_loader", "chat_engine"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert "streamlit" not in imported_roots(path), f"{path} imports streamlit"


def test_engine_does_not_import_components():
    for package in ("model_loader", "chat_engine"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert not imported_roots(path) & {"components", "app"}, f"{path} imports the UI"


def test_importing_the_page_modules_does_not_load_torch():
    code = ("import sys; import components.chat, components.sidebar, components.state, components.load_panel, "
            "chat_engine.engine; "
            "print(sorted(m for m in ('torch', 'transformers', 'modelscope') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
