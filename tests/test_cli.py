"""``vk-trio --help`` and every command's help read as user documentation: what it does, in
words, with each option's default, and none of the developer docstrings' markup."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vk_trio import cli

MARKUP = (":func:", ":mod:", ":class:", ":data:", "``")


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The parser and every subcommand's, with the words that select it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


ALL = list(parsers(cli.build_parser()))


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) or "vk-trio" for p, _ in ALL])
def test_help_has_no_markup_and_shows_every_default(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert not [mark for mark in MARKUP if mark in text], text
    assert parser.description, f"{path}: no description"
    for action in parser._actions:
        if (
            not action.option_strings
            or not action.help
            or action.default in (None, False, [], argparse.SUPPRESS)
        ):
            continue
        shown = " ".join(parser._get_formatter()._expand_help(action).split())
        assert "default" in shown, f"{' '.join(path)} {action.option_strings[0]}: {shown}"


def test_top_level_help_tells_a_user_where_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vk_trio", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "vk-trio demo" in result.stdout and "vk-trio offers" in result.stdout
    assert "vk-trio COMMAND --help" in result.stdout
    assert "add_arguments" not in result.stdout  # not the developer docstring of cli.py
