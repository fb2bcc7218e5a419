"""scripts/_venv.sh: pip runs on the first run and after pyproject.toml changed, only then.

The script runs for real (bash) in a copy of the repository's layout whose
`.venv/bin/python` is a stand-in: it records each `pip install` (and fails it when asked)
and hands everything else to the interpreter running these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "${1:-}" = "-m" ] && [ "${2:-}" = "pip" ]; then
    echo "$*" >>"$(dirname "$0")/pip-calls"
    [ -e "$(dirname "$0")/pip-fails" ] && { echo "pip: no network" >&2; exit 1; }
    exit 0
fi
exec "%s" "$@"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with an existing .venv whose python is the stand-in."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "_venv.sh", tmp_path / "scripts" / "_venv.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "healthmon"\n')
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON % sys.executable)
    python.chmod(0o755)
    return tmp_path


def source_venv(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", "-c", f"source {repo / 'scripts' / '_venv.sh'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def pip_calls(repo: Path) -> int:
    calls = repo / ".venv" / "bin" / "pip-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_pip_runs_first_then_only_after_pyproject_changes(repo: Path) -> None:
    first = source_venv(repo)
    assert first.returncode == 0, first.stderr
    assert pip_calls(repo) == 1
    assert "installing healthmon" in first.stderr
    assert "usually 20 s to a minute" in first.stderr  # says how long it takes

    again = source_venv(repo)
    assert again.returncode == 0, again.stderr
    assert pip_calls(repo) == 1  # nothing changed: no pip
    assert again.stderr == ""

    with (repo / "pyproject.toml").open("a") as f:
        f.write('version = "0.2"\n')
    changed = source_venv(repo)
    assert changed.returncode == 0, changed.stderr
    assert pip_calls(repo) == 2
    source_venv(repo)
    assert pip_calls(repo) == 2


def test_a_failed_install_leaves_no_stamp_and_is_tried_again(repo: Path) -> None:
    assert source_venv(repo).returncode == 0
    with (repo / "pyproject.toml").open("a") as f:
        f.write('version = "0.2"\n')
    (repo / ".venv" / "bin" / "pip-fails").touch()

    failed = source_venv(repo)
    assert failed.returncode != 0
    assert "pip: no network" in failed.stderr
    assert not list((repo / ".venv").glob("healthmon-installed*"))

    (repo / ".venv" / "bin" / "pip-fails").unlink()
    retried = source_venv(repo)
    assert retried.returncode == 0, retried.stderr
    assert pip_calls(repo) == 3  # the first, the failed one, and the retry
    assert source_venv(repo).returncode == 0
    assert pip_calls(repo) == 3


def test_a_broken_venv_is_named_with_what_to_do(repo: Path) -> None:
    (repo / ".venv" / "bin" / "python").write_text("#!/nonexistent/interpreter\n")
    broken = source_venv(repo)
    assert broken.returncode == 1
    assert "rm -rf .venv" in broken.stderr
