"""Imports point one way: the page never touches the ML stack or a backend, the engine never touches Streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = {"torch", "transformers", "modelscope", "accelerate", "huggingface_hub", "safetensors", "tokenizers"}


# Project packages each package may import (besides itself). Lower layers never import higher ones.
LAYERS = {
    "common": set(),
    "conversations": {"common"},
    "model_loader": {"common"},
    "planner": {"common", "model_loader"},
    "chat_engine": {"common", "model_loader"},
    "accounts": {"common", "conversations"},
    "components": {"common", "conversations", "chat_engine", "model_loader", "accounts"},
    "web": {"common", "chat_engine", "model_loader", "accounts"},
    "doctor": {"common", "model_loader", "planner"},
}
# What of the engine the page may see: the seam and its value types, never a backend or the Engine class.
COMPONENT_ENGINE_MODULES = {"chat_engine.interface", "chat_engine.params", "chat_engine.budget", "chat_engine.prompt"}
COMPONENT_OTHER_MODULES = {"model_loader.options", "model_loader.registry"}  # value types: load options, model rows
# The page composes the engine but names no backend: what each can do comes from its capabilities.
BACKEND_PACKAGES = ("chat_engine.transformers_backend", "chat_engine.openai_backend")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def imported_roots(path: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(path)}


def violations(package: str, path: Path) -> set[str]:
    """What `path`, a module of `package`, imports against the layering rules."""
    roots = imported_roots(path)
    wrong = (roots & (set(LAYERS) | {"app"})) - LAYERS[package] - {package}
    if package == "components":
        wrong |= roots & ML
        wrong |= {m for m in imported_modules(path) if m.split(".")[0] in ("chat_engine", "model_loader")
                  and m not in COMPONENT_ENGINE_MODULES | COMPONENT_OTHER_MODULES}
    return wrong


def app_violations(path: Path) -> set[str]:
    """What the page script imports against the rules: the ML stack, a backend package, or a backend's module."""
    modules = imported_modules(path)
    return ({m for m in modules if m.split(".")[0] in ML}
            | {m for m in modules if m.startswith(BACKEND_PACKAGES)})


def test_the_page_script_imports_no_backend_and_no_ml_library():
    assert app_violations(ROOT / "app.py") == set()


def test_each_package_imports_only_the_layers_below_it():
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            wrong = violations(package, path)
            assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_a_component_importing_the_transformers_backend_or_torch_breaks_the_rule(tmp_path):
    """The rule above really catches what it is for."""
    bad = tmp_path / "bad.py"
    bad.write_text("from chat_engine.transformers_backend.backend import TransformersBackend\nimport torch\n"
                   "from chat_engine.engine import Engine\n")
    assert violations("components", bad) >= {"chat_engine.transformers_backend.backend", "torch",
                                             "chat_engine.engine"}
    good = tmp_path / "good.py"
    good.write_text("from chat_engine.interface import Reply\nfrom model_loader.options import LoadOptions\n")
    assert violations("components", good) == set()
    internal = tmp_path / "internal.py"
    internal.write_text("from model_loader.placement import plan_placement\n")
    assert violations("components", internal) == {"model_loader.placement"}
    page = tmp_path / "page.py"
    page.write_text("from chat_engine.openai_backend.server import served_model_names\nimport torch\n")
    assert app_violations(page) == {"chat_engine.openai_backend.server", "torch"}


def test_ui_modules_never_import_the_ml_stack():
    for path in [ROOT / "app.py", *sorted((ROOT / "components").glob("*.py"))]:
        assert not imported_roots(path) & ML, f"{path.name} imports {imported_roots(path) & ML}"


def test_engine_never_imports_streamlit():
    for package in ("model_loader", "chat_engine", "doctor"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert "streamlit" not in imported_roots(path), f"{path} imports streamlit"


def test_engine_does_not_import_components():
    for package in ("model_loader", "chat_engine"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert not imported_roots(path) & {"components", "app"}, f"{path} imports the UI"


def test_importing_the_page_loads_neither_torch_nor_a_backend_library():
    code = ("import sys; import app, components.chat, components.sidebar, components.state, components.load_panel, "
            "components.turn, chat_engine.engine, planner.machine_fit, conversations.store; "
            "print(sorted(m for m in ('torch', 'transformers', 'modelscope', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
