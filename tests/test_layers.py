"""The import layers hold (import-linter, as `make lint` runs it), and the contract is stdlib only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import emergence_lab.contract

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(emergence_lab.contract.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "the parse found no imports at all"
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
