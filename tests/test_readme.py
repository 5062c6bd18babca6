"""The README's code blocks: every Python block runs on a CPU, every shell command names real things."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tcnkernels.__main__ import parse_args

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == "python"]
SHELL_LINES = [line.split(" #")[0].strip() for lang, code in BLOCKS if lang == "bash"
               for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_has_code_to_check():
    assert PYTHON_BLOCKS and len(SHELL_LINES) >= 5


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_block_runs_on_a_cpu(code, tmp_path):
    # As a new user runs it: a fresh interpreter, no Triton interpreter switched on by a test harness.
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TCNKERNELS_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _extras():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("line", SHELL_LINES)
def test_shell_command_is_valid(line):
    words = shlex.split(line)
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # leading VAR=value assignments
        words = words[1:]
    if words[:1] == ["torchrun"] and "-m" in words:  # torchrun [options] -m module args: the module's own line
        words = ["python"] + words[words.index("-m"):]
    if words[:3] == ["python", "-m", "tcnkernels"] or words[:1] == ["tcnkernels"]:
        parse_args(words[3:] if words[0] == "python" else words[1:])  # exits (fails) on a bad option
    elif "pytest" in words[:3]:
        for arg in words[words.index("pytest") + 1:]:
            if "/" in arg and not arg.startswith("-"):
                assert (ROOT / arg.split("::")[0]).exists(), f"{line}: {arg} does not exist"
    elif words[:2] == ["pip", "install"]:
        for arg in words[2:]:
            extras = re.fullmatch(r"\.\[([\w,]+)\]", arg)
            if extras:
                assert set(extras.group(1).split(",")) <= set(_extras()), line
    elif words[0] in ("bash", "python") and not words[1].startswith("-"):
        assert (ROOT / words[1]).exists(), line
    else:
        raise AssertionError(f"the README runs a command this test does not know: {line}")
