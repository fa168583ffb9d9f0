"""The CLI lists its commands and each has real help text."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from edgecl.cli import main


def test_help_lists_every_registered_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.commands:
        assert name in result.output


def test_every_command_has_help_text():
    runner = CliRunner()
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert (command.help or "").strip(), f"command {name} has no help text"


def test_console_script_is_installed_and_runs():
    result = subprocess.run([sys.executable, "-m", "edgecl", "--version"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "edgecl" in result.stdout
