"""The ``volcam`` command line run in-process, and its one-line errors, for the CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner

from volcam.cli import app

runner = CliRunner()


def run(*args) -> tuple[int, str, str]:
    """``volcam ARGS...`` → (exit code, stdout, stderr); arguments may be paths."""
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str) -> str:
    """The one ``volcam: error: ...`` line a usage mistake gives (exit 2)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volcam: error: "), err
    return lines[0]
