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


def test_click_usage_errors_are_one_line_naming_the_command_and_exit_2():
    runner = CliRunner()
    cases = {("train", "--epochs", "abc"): "edgecl train: Invalid value for '--epochs'",
             ("train", "--no-such-option"): "edgecl train: No such option",
             ("no-such-command",): "edgecl: No such command",
             ("data", "generate-esc50"): "edgecl data generate-esc50: Missing argument 'ROOT'"}
    for args, expected in cases.items():
        result = runner.invoke(main, list(args), prog_name="edgecl")
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgecl: error: "), (args, lines)
        assert expected in lines[0] and "--help" in lines[0], (args, lines)


def test_version_and_help_still_exit_0():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).exit_code == 0
    assert runner.invoke(main, ["train", "--help"]).exit_code == 0
