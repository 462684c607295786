"""Which code made a result: per-rule code hashes (rerun triggers) and output provenance.

Snakemake reruns a rule when its script changes, not when the library the script imports
changes. Each rule therefore gets a parameter `code`: a hash of its script and of every
`quantinit` module it can reach through imports (found statically, lazy imports inside
functions included). A changed parameter makes Snakemake rerun the rule and, through file
times, everything downstream. The hash is taken over the parsed code without docstrings,
so editing a comment or a docstring does not retrain 48 cells; any change to what the code
does, does.

`provenance()` describes the code that wrote an output (package version, sha256 of the
library's source files, git commit and whether the tree had changes); io's writers store it
in every Parquet file's metadata and every JSON output.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "quantinit"
PACKAGE_DIR = Path(__file__).resolve().parent


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _imported_modules(tree: ast.AST, package_dir: Path) -> set[str]:
    """Names of the package's modules imported anywhere in `tree` (e.g. {"training"})."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative import inside the package
                names = [f"{PACKAGE}.{node.module}"]
            else:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:  # from . import x
            names = [f"{PACKAGE}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and (package_dir / f"{parts[1]}.py").exists():
                found.add(parts[1])
    return found


def _parsed(path: Path, package_dir: Path) -> tuple[set[str], str]:
    """(package modules `path` imports, its code without docstrings as a string)."""
    tree = ast.parse(path.read_text())
    return _imported_modules(tree, package_dir), ast.dump(_strip_docstrings(tree))


def module_closure(script: str | Path, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every package module `script` can import, directly or through other modules."""
    return sorted(_closure(Path(script), package_dir, {}))


def _closure(script: Path, package_dir: Path, parsed: dict) -> set[str]:
    """module_closure, parsing each file once into `parsed` ({path: _parsed(path)})."""

    def parse(path):
        if path not in parsed:
            parsed[path] = _parsed(path, package_dir)
        return parsed[path]

    pending, seen = set(parse(script)[0]), set()
    while pending:
        name = pending.pop()
        seen.add(name)
        pending |= parse(package_dir / f"{name}.py")[0] - seen
    return seen


def code_hashes(scripts, package_dir: Path = PACKAGE_DIR) -> dict[Path, str]:
    """{script: hash of what it runs (itself and its package modules, docstrings aside)}.

    Each file is parsed once for all scripts (the workflow hashes every rule's script each
    time Snakemake builds its DAG).
    """
    parsed: dict[Path, tuple[set[str], str]] = {}
    hashes = {}
    for script in map(Path, scripts):
        modules = sorted(_closure(script, package_dir, parsed))
        files = [
            ("script", script),
            ("__init__", package_dir / "__init__.py"),
            *((name, package_dir / f"{name}.py") for name in modules),
        ]
        digest = hashlib.sha256()
        for name, path in files:
            if path not in parsed:
                parsed[path] = _parsed(path, package_dir)
            digest.update(f"{name}\0{parsed[path][1]}\0".encode())
        hashes[script] = digest.hexdigest()[:16]
    return hashes


def code_hash(script: str | Path, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of what `script` runs: itself and its package modules, docstrings aside."""
    return code_hashes([script], package_dir)[Path(script)]


def library_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the library's source files, byte for byte, in name order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        digest.update(f"{path.name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@functools.cache
def provenance() -> dict:
    """The code that is writing this process's outputs."""
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from src/ without installing
        version = None
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "quantinit_version": version,
        "library_sha256": library_sha256(),
        "git_commit": commit,
        "git_dirty": bool(changes) if commit else None,
    }


class LibraryMismatch(RuntimeError):
    """The quantinit a process imported is not the workflow's own."""


def check_library(workflow_package_dir: Path, package_dir: Path = PACKAGE_DIR) -> None:
    """Raise LibraryMismatch unless the imported library is the workflow's (`src/quantinit`
    of the repository the running Snakefile belongs to), or a byte-identical copy of it.

    Jobs import quantinit from their software environment (`pip install -e .`, or the conda
    env built from workflow/envs/). An environment built for another checkout (a shared
    `--conda-prefix`, a venv made in another clone) would otherwise run that checkout's code
    under this checkout's code hashes.
    """
    workflow_package_dir = Path(workflow_package_dir).resolve()
    if package_dir.resolve() == workflow_package_dir or not workflow_package_dir.is_dir():
        return
    if library_sha256(package_dir) != library_sha256(workflow_package_dir):
        raise LibraryMismatch(
            f"this process imports quantinit from {package_dir}, but the workflow's library "
            f"is {workflow_package_dir} and the two differ. The software environment was "
            f"built for another checkout: reinstall it here (`pip install -e "
            f"{workflow_package_dir.parents[1]}`, or `make setup`), or give this checkout "
            "its own conda envs (`--conda-prefix`, or delete .snakemake/conda)."
        )


def check_installed_library(python: str, workflow_package_dir: Path) -> None:
    """check_library for the quantinit that `python` imports with a clean PYTHONPATH (what a
    job that runs with this interpreter gets); LibraryMismatch also when it has none."""
    found = subprocess.run(
        [python, "-c", "import quantinit; print(quantinit.__path__[0])"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if found.returncode != 0:
        raise LibraryMismatch(
            f"{python} cannot import quantinit, so no job could run: install the package "
            f"(`pip install -e '{Path(workflow_package_dir).resolve().parents[1]}[tensorflow]'`, "
            "or `make setup`), or run with `--sdm conda`."
        )
    check_library(workflow_package_dir, Path(found.stdout.strip()))
