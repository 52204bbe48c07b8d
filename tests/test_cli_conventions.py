"""Conventions every `keyseg` command shares: version, completion, usage errors."""

from importlib.metadata import version

from typer.testing import CliRunner

from cli import app


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"keyseg {version('keyseg')}"


def test_shell_completion_is_offered():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_an_unknown_option_is_a_usage_error():
    result = CliRunner().invoke(app, ["evaluate", "--no-such-option"])
    assert result.exit_code == 2
