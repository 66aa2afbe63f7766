"""The README's runnable examples run: every code block marked by the line ``<!-- test: run -->`` directly
above its opening fence. Python blocks run in a fresh interpreter, bash blocks in bash with this
environment's console scripts first on PATH; all in one temporary folder, in README order (a block
may use what an earlier one made, as a reader following the README would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- test: run -->"
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def marked_blocks(text: str) -> list[Block]:
    """The blocks marked runnable, in order.

    Raises:
        ValueError: a marker not directly above an opening fence, or a block that is never closed.
    """
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        opening = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not opening or not opening["lang"]:
            raise ValueError(f"README.md:{i + 1}: {MARKER} must stand directly above an opening fence with a language")
        indent = opening["indent"]
        body = []
        for j in range(i + 2, len(lines)):
            if lines[j].strip() == "```":
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
        else:
            raise ValueError(f"README.md:{i + 2}: the marked block is never closed")
        blocks.append(Block(i + 2, opening["lang"], "\n".join(body) + "\n"))
    return blocks


BLOCKS = marked_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return env


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block_runs(block, workdir):
    if block.lang == "python":
        script = workdir / f"readme_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    elif block.lang in ("bash", "sh", "shell", "console"):
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        pytest.fail(f"{block}: cannot run a {block.lang!r} block; mark python or bash blocks only")
    proc = subprocess.run(cmd, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{block} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def test_the_python_api_example_is_marked():
    assert any(b.lang == "python" and "class MyJob(Job)" in b.code for b in BLOCKS)


def test_marker_parsing_refuses_a_stray_marker():
    assert [b.code for b in marked_blocks(f"{MARKER}\n```bash\necho hi\n```\n")] == ["echo hi\n"]
    assert marked_blocks("```python\nprint(1)\n```\n") == []
    with pytest.raises(ValueError, match="README.md:1"):
        marked_blocks(f"{MARKER}\n\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        marked_blocks(f"{MARKER}\n```bash\necho hi\n")
