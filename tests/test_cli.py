"""The `zoo` parser built from the command-group modules of generators/cli/."""

from __future__ import annotations

import argparse

import pytest

from generators.cli import GROUPS, build_parser, main

COMMANDS = ["specs", "generate", "price", "info", "verify", "relabel", "card", "plot", "study",
            "benchmark",
            "import-ray-tune", "export-ray-tune"]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_groups_register_every_command_once_in_help_order():
    assert list(_subcommands(build_parser())) == COMMANDS
    for group in GROUPS:
        parser = argparse.ArgumentParser()
        group.register(parser.add_subparsers())
        for name, sub in _subcommands(parser).items():
            assert sub.get_default("run").__module__ == group.__name__, name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: zoo {command} [-h]")


def test_output_folders_are_named_dir_in_help(capsys):
    for command in ("import-ray-tune", "export-ray-tune", "plot", "study"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--out DIR" in capsys.readouterr().out
