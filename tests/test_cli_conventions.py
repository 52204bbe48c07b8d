"""Conventions every `keyseg` command shares: version, completion, usage errors."""

import shutil
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


def _leaf_commands():
    """(name, click command) of every runnable `keyseg` command, hidden ones included."""
    import typer

    def walk(command, prefix):
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                yield from walk(sub, f"{prefix} {name}".strip())
        else:
            yield prefix, command

    return list(walk(typer.main.get_command(app), ""))


def test_every_command_takes_progress_and_quiet_and_names_its_inputs():
    commands = _leaf_commands()
    assert {"prepare", "shard", "shards verify", "shards stats", "shards unpack", "train", "export", "evaluate",
            "predict", "demo-data", "mine-keywords generate", "mine-keywords validate"} <= {n for n, _ in commands}
    for name, command in commands:
        flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        assert {"--progress", "--no-progress", "--quiet"} <= flags, name
        positional = [param.name for param in command.params if param.param_type_name == "argument"]
        # Only the timing wrapper takes a command line after `--`.
        assert positional == ([] if name != "demo-report time" else ["command"]), name
        # One name per concept: outputs are --out, shard sets --shards.
        assert not flags & {"--output", "--out-dir", "--shard-set", "--batch"}, name


def test_quiet_prints_only_errors(demo_chain, tmp_path):
    shards = shutil.copytree(demo_chain.shards, tmp_path / "shards")
    quiet = CliRunner().invoke(app, ["shards", "stats", "--shards", str(shards), "--no-picture", "-q"])
    assert quiet.exit_code == 0 and quiet.output == ""
    failing = CliRunner().invoke(app, ["shards", "stats", "--shards", str(tmp_path / "nothing"), "-q"])
    assert failing.exit_code == 1 and failing.output.startswith("error:")


def test_summaries_fit_80_columns(demo_chain, tmp_path):
    shutil.copytree(demo_chain.prepared, tmp_path / "prepared")
    shards = shutil.copytree(demo_chain.shards, tmp_path / "shards")
    results = [
        CliRunner().invoke(app, ["prepare", "--data-dir", str(demo_chain.data), "--out", str(tmp_path / "prepared"),
                                 "--no-progress"], env={"COLUMNS": "80"}),
        CliRunner().invoke(app, ["shards", "stats", "--shards", str(shards), "--no-picture"],
                           env={"COLUMNS": "80"}),
    ]
    for result in results:
        assert result.exit_code == 0, result.output
        assert "…" not in result.output, result.output
        assert "refcoco:testA" in result.output or "reasonseg:val" in result.output
