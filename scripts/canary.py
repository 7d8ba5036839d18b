"""Canary for the next library release: a throwaway venv with the newest versions the ranges allow, tested.

    python scripts/canary.py            # newest allowed versions, then the unit and engine tiers
    python scripts/canary.py --lock     # the same; if the tests pass, write the pins the installs use

It builds a fresh virtual environment, installs requirements-dev.in (ranges) with `pip install --upgrade`, prints
the versions it got, and runs `pytest tests/unit tests/engine` there. torch is the one already installed here
(its exact build, e.g. 2.13.0+cpu; `--torch` to try another): the libraries around it are what move under the app.
With --lock the pin files are rewritten from that venv's `pip freeze` before the tests run (so that the tests check
them) and put back as they were unless the tests pass: `pip install -r requirements.txt` then installs exactly what
was tested. torch and the packages only torch needs are never pinned, so that a GPU box keeps its CUDA build.
Needs the package index; nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The unit and engine tiers: everything but the page, browser, server and bench tiers (minutes, not tens of them).
TIERS = ("tests/unit", "tests/planner", "tests/conversations", "tests/model_loader", "tests/engine")
SHOWN = ("torch", "transformers", "accelerate", "streamlit", "modelscope", "huggingface-hub", "tokenizers",
         "safetensors", "sentencepiece", "psutil", "openai", "fastapi", "bitsandbytes", "pytest", "playwright", "ruff")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> dict[str, str]:
    """{name: requirement} of a requirements file's own lines (not of the files it includes)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found[canonical(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])] = line
    return found


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False, **kwargs)


def installed_torch() -> str:
    """The torch of this interpreter, build suffix included (a CUDA build is found on its own index: --torch)."""
    try:
        import torch
    except ImportError:
        return "torch==2.13.0"
    return f"torch=={torch.__version__}"


def freeze(python: Path) -> dict[str, str]:
    """{canonical name: version} of everything in the venv."""
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                         text=True).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def dependency_graph(python: Path) -> dict[str, set[str]]:
    """{package: the packages it requires (no extras)} for everything installed in the venv."""
    code = ("import json, re, importlib.metadata as m\n"
            "print(json.dumps({d.metadata['Name']: [re.split(r'[ <>=!~;\\[(]', r, maxsplit=1)[0] for r in "
            "(d.requires or []) if 'extra ==' not in r] for d in m.distributions()}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return {canonical(k): {canonical(d) for d in v} for k, v in json.loads(out).items()}


def needed_without_torch(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    """Packages reachable from `roots` without passing through torch: what the app needs whatever torch it has."""
    seen: set[str] = set()
    todo = [r for r in roots if r != "torch"]
    while todo:
        name = todo.pop()
        if name in seen or name == "torch":
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
    return seen


def write_lock(pins: dict[str, str], python_version: str, graph: dict[str, set[str]]) -> None:
    """requirements.txt / requirements-dev.txt: exact pins of the direct dependencies (torch a range);
    constraints.txt: every other package of the tested venv."""
    ranges = requirements(ROOT / "requirements.in")
    torch_range = ranges.pop("torch")
    runtime, dev = list(ranges), list(requirements(ROOT / "requirements-dev.in"))
    header = (f"# Written by `python scripts/canary.py --lock` from {{src}} in a fresh venv (Python {python_version})\n"
              f"# where the unit and engine tests passed; edit {{src}}, not this file.\n")
    (ROOT / "requirements.txt").write_text(
        header.format(src="requirements.in")
        + "# Every package is pinned (the rest in constraints.txt) but torch: an installed CUDA build is kept.\n"
        + "-c constraints.txt\n" + f"{torch_range}\n" + "".join(f"{n}=={pins[n]}\n" for n in sorted(runtime)))
    (ROOT / "requirements-dev.txt").write_text(
        header.format(src="requirements-dev.in") + "-r requirements.txt\n"
        + "".join(f"{n}=={pins[n]}\n" for n in sorted(dev)))
    direct = set(runtime) | set(dev) | {"torch", "pip", "setuptools", "wheel"}
    wanted = needed_without_torch(graph, runtime + dev)
    (ROOT / "constraints.txt").write_text(
        header.format(src="requirements-dev.in")
        + "# The packages the direct dependencies pull in, as tested (not torch's own: a CUDA build brings those).\n"
        + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in direct and n in wanted))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lock", action="store_true", help="write the pins when the tests pass")
    ap.add_argument("--torch", default=installed_torch(), help="torch requirement for the venv (default: %(default)s)")
    ap.add_argument("--keep", metavar="DIR", help="build the venv in DIR and keep it")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="moe-chat-canary-") as tmp:
        venv = Path(args.keep or tmp) / "venv"
        if run([sys.executable, "-m", "venv", str(venv)]).returncode:
            return 1
        python = venv / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "--quiet", "--upgrade"]
        keep_torch = Path(venv.parent / "torch-constraint.txt")  # `--upgrade` must not swap torch for another build
        keep_torch.write_text(args.torch + "\n")
        if run(pip + [args.torch]).returncode or run(
                pip + ["-r", str(ROOT / "requirements-dev.in"), "-c", str(keep_torch)]).returncode:
            print("canary: FAILED to install the newest allowed versions")
            return 1
        pins = freeze(python)
        python_version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                        capture_output=True, text=True, check=True).stdout.strip()
        print(f"canary versions (Python {python_version}): "
              + ", ".join(f"{name} {pins.get(name, '-')}" for name in SHOWN), flush=True)
        lock_files = [ROOT / name for name in ("requirements.txt", "requirements-dev.txt", "constraints.txt")]
        before = {path: path.read_text() if path.exists() else None for path in lock_files}
        passed = False
        try:
            if args.lock:  # written first, so that the tests check the files they would commit
                write_lock(pins, python_version, dependency_graph(python))
            tests = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TIERS],
                        cwd=ROOT, env={**os.environ, "MOE_CHAT_CANARY": "1"})
            passed = tests.returncode == 0
        finally:
            if args.lock and not passed:  # an interruption or a failure leaves the pins as they were
                for path, text in before.items():
                    if text is None:
                        path.unlink(missing_ok=True)
                    else:
                        path.write_text(text)
        if not passed:
            print("canary: the unit and engine tiers FAILED with the newest allowed versions above"
                  + ("; the pin files were left as they were" if args.lock else ""))
            return 1
        print("canary: the unit and engine tiers passed with the newest allowed versions above"
              + ("; the pin files now hold them" if args.lock else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
