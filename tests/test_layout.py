"""The layout's promises, checked on the source: the kernel knows nothing of the tuner, the library has no
Snakemake in it, no module imports itself around a circle (lazy imports inside functions included), and
nothing edits sys.path."""

import ast
import os
import re
from pathlib import Path

from conftest import REPO

PACKAGES = ("kernels", "w8a8_tuner")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in it (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # a package's __init__ is imported on the way to its modules: not an edge of its own
    return {m: {d for d in imports_of(p, known) if d != m and d not in PACKAGES} for m, p in mods.items()}


def test_no_import_circles():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_kernel_knows_nothing_of_the_tuner_and_the_library_nothing_of_snakemake():
    for name, path in modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if name.startswith("kernels"):
            assert not any(i.startswith("w8a8_tuner") for i in imported), f"{name} imports the tuner"
        assert not any(i.split(".")[0] == "snakemake" for i in imported), f"{name} imports snakemake"


def test_nothing_edits_sys_path():
    edits = re.compile(r"sys\.path\.(insert|append)|PYTHONPATH\"?\s*[:=]|\[\"PYTHONPATH\"\]\s*=")
    files = []
    for folder, subfolders, names in os.walk(REPO):  # pruned: walking .venv took a second of the unit tests
        subfolders[:] = [d for d in subfolders if d not in (".venv", ".git", ".snakemake")]
        files += [Path(folder, n) for n in names if n.endswith((".py", ".smk")) or n == "Snakefile"]
    found = [f"{p.relative_to(REPO)}:{i + 1}" for p in files if p != Path(__file__)
             for i, line in enumerate(p.read_text().splitlines()) if edits.search(line)]
    assert not found, f"sys.path / PYTHONPATH edits: {found}"


def test_ruff_is_clean():
    """The style pyproject.toml configures holds for the whole tree."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_rules_write_their_outputs_whole():
    """profiles/default ignores Snakemake's incomplete marks (so that a point an orphaned job finished after a
    kill -9 of snakemake is kept): that is right only while every output is written under a temporary name
    and renamed when whole (w8a8_tuner.results.files.write_atomic), never written in place."""
    bad = []
    for path in [*(REPO / "workflow" / "rules").glob("*.smk"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "output" in line and re.search(r"\.write_(text|bytes)\(|open\([^)]*[\"'][wax]", line):
                bad.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not bad, bad
