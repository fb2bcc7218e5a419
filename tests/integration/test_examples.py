"""The README's commands for the examples run as printed, from the clone's root."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def readme_command(script: str) -> str:
    """The README's shell line that runs `script`."""
    lines = [
        line.strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if script in line and not line.lstrip().startswith(("[", "-", "#"))
    ]
    commands = [line for line in lines if line.split()[0].endswith("python")]
    assert commands, f"the README gives no command that runs {script}"
    return commands[0]


@pytest.mark.timeout(60)
def test_the_readme_s_quickstart_command_runs(tmp_path: Path) -> None:
    command = readme_command("examples/quickstart.py")
    assert command == ".venv/bin/python examples/quickstart.py"
    # As printed, from the root, plus the database argument so the clone stays clean.
    # The suite runs in the clone's .venv (./scripts/test); the README's python is it.
    python = REPO / shlex.split(command)[0]
    assert python.exists(), "run the suite with ./scripts/test, which makes .venv"
    done = subprocess.run(
        [*shlex.split(command), str(tmp_path / "example.db")],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Cluster status:" in done.stdout
    assert "status transitions:" in done.stdout
    assert "Traceback" not in done.stderr
    assert (tmp_path / "example.db").exists()


def test_a_python_without_healthmon_is_told_the_command() -> None:
    # -S: no site-packages, so no healthmon, as with a bare system python3.
    done = subprocess.run(
        [sys.executable, "-S", "examples/quickstart.py"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1
    assert ".venv/bin/python examples/quickstart.py" in done.stderr
    assert "Traceback" not in done.stderr
