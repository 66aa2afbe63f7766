"""Errors come from one hierarchy: the package raises no bare ValueError (pydantic validators raise
ConfigError / StageError, which subclass ValueError so pydantic still reports them as field errors)."""

from __future__ import annotations

import ast
from pathlib import Path

import brevetti_pipe

PACKAGE = Path(brevetti_pipe.__file__).parent


def test_no_bare_value_error_is_raised():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id == "ValueError":
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not found, f"raise a brevetti_pipe.errors class instead of ValueError at {found}"
