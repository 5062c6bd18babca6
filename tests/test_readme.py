"""The code blocks of the README and of docs/: every Python block runs on a CPU, every shell command
names real things, every page of docs/ is linked from the README and every relative link resolves."""
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
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(page.relative_to(ROOT).as_posix(), lang, code) for page in PAGES
          for lang, code in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), re.S)]
PYTHON_BLOCKS = [(page, code) for page, lang, code in BLOCKS if lang == "python"]
SHELL_LINES = [line.split(" #")[0].strip() for _, lang, code in BLOCKS if lang == "bash"
               for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
PYTHON_IDS = [f"{page}-python{i}" for i, (page, _) in enumerate(PYTHON_BLOCKS)]


def test_the_pages_have_code_to_check():
    assert PYTHON_BLOCKS and len(SHELL_LINES) >= 5


def test_every_doc_is_linked_from_the_readme_and_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert all(f"docs/{page.name}" in readme for page in PAGES[1:]), [p.name for p in PAGES[1:]]
    for page in PAGES:
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))  # no code
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if not re.match(r"\w+://", target):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.slow
@pytest.mark.parametrize("page,code", PYTHON_BLOCKS, ids=PYTHON_IDS)
def test_python_block_runs_on_a_cpu(page, code, tmp_path):
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
