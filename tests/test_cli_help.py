"""The command line explains itself: `ccexport --help`, `--version`, `COMMAND --help`.

Each command of ``shared.workstation.cli.COMMANDS`` is checked, whoever added it: its help runs
as a real process without a traceback, has a description and an example, and every
option it shows has a help text (its parser, from the command module's ``parser()``,
is looked at directly).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from shared.workstation.cli import COMMANDS, GROUPS, LazyCommand, main_help
from shared.workstation.cli_help import CommandHelpFormatter, command_parser

ROOT = Path(__file__).resolve().parent.parent


def ccexport(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CCEXPORT_DEBUG"} | {"COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_main_help_says_what_ccexport_is_and_lists_every_command_by_group() -> None:
    result = ccexport("--help")
    assert_clean(result)
    text = result.stdout
    about = " ".join(text.split("\n\n")[1].split())
    assert "Customer Insights" in about
    assert "Constant Contact lists" in about
    groups = [c.group for c in COMMANDS.values()]
    titles = [GROUPS.get(g, g) + ":" for g in [*GROUPS, *groups] if g in groups]
    positions = [text.index(f"\n{title}\n") for title in dict.fromkeys(titles)]
    assert positions == sorted(positions), "groups in the order of GROUPS"
    for name, command in COMMANDS.items():
        line = re.search(rf"^  {name} +(.+)$", text, re.MULTILINE)
        assert line is not None, f"{name} is not listed"
        assert command.description.startswith(line.group(1).strip()), name
        title = GROUPS.get(command.group, command.group) + ":"
        assert text.index(f"\n{title}\n") < line.start(), f"{name} is under its group"
    examples = text[text.index("\nexamples:\n") :]
    assert len(re.findall(r"^  ccexport \w+", examples, re.MULTILINE)) >= 2
    assert "--version" in text
    assert text == main_help(80) + "\n"


def test_help_and_version_load_no_command() -> None:
    """`ccexport --help` reads the table only; cli_help is argparse and nothing else."""
    program = (
        "import sys\n"
        "import shared.workstation.cli_help\n"
        "helper = sorted(m for m in sys.modules if m.startswith('shared.'))\n"
        "from shared.workstation.cli import COMMANDS, main\n"
        "main(['--help']); main(['--version'])\n"
        "modules = {getattr(c.handler, 'module', 'sandbox') for c in COMMANDS.values()}\n"
        "heavy = ('aiohttp', 'azure', 'tqdm', 'pyarrow', 'numpy', *modules)\n"
        "print(helper, sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = "['shared.workstation', 'shared.workstation.cli_help'] []"
    assert result.stdout.splitlines()[-1] == loaded


def test_no_command_is_a_usage_error_and_an_unknown_one_names_the_commands() -> None:
    bare = ccexport()
    assert bare.returncode == 2
    assert bare.stderr.startswith("usage: ccexport COMMAND")
    wrong = ccexport("expotr")
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("ccexport: error: unknown command 'expotr'; the commands are")
    assert all(name in wrong.stderr for name in COMMANDS)
    assert "Traceback" not in bare.stderr + wrong.stderr


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_package_version(flag: str) -> None:
    result = ccexport(flag)
    assert_clean(result)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert metadata.version("ccexport") == pyproject
    assert result.stdout == f"ccexport {pyproject}\n"
    assert re.fullmatch(r"ccexport \d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_help_runs_and_has_a_description_and_examples(name: str) -> None:
    result = ccexport(name, "--help")
    assert_clean(result)
    text = result.stdout
    assert text.startswith(f"usage: ccexport {name} ")
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 5, f"ccexport {name} needs a description"
    examples = text[text.index("\nexamples:\n") :]
    assert re.search(rf"^  # .+\n  ccexport {name}\b", examples, re.MULTILINE), (
        f"ccexport {name} needs an example"
    )


def command_parser_of(name: str) -> argparse.ArgumentParser:
    handler = COMMANDS[name].handler
    assert isinstance(handler, LazyCommand), (
        f"register {name} with shared.workstation.cli.lazy(MODULE): "
        "its module's parser() is checked here"
    )
    return handler.build_parser()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    parser = command_parser_of(name)
    assert parser.prog == f"ccexport {name}"
    assert parser.formatter_class is CommandHelpFormatter, "built with cli_help.command_parser"
    assert parser.description
    assert parser.epilog
    assert "examples:" in parser.epilog
    text = parser.format_help()  # a stray % in a help string fails here
    formatter = CommandHelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue  # -h, hidden aliases and internal options
        shown = action.option_strings[0] if action.option_strings else action.metavar
        assert (action.help or "").strip(), f"ccexport {name} {shown} has no help"
        assert str(shown) in text
        default = action.default
        if action.option_strings and default not in (None, False, [], argparse.SUPPRESS):
            assert "(default" in formatter._get_help_string(action), (
                f"ccexport {name} {shown} does not show its default"
            )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_connection_is_named_with_connection_everywhere(name: str) -> None:
    parser = command_parser_of(name)
    for action in parser._actions:
        if "connection" in action.dest and action.option_strings:
            if action.help == argparse.SUPPRESS:
                assert action.option_strings == ["--name"], "only the old --name is hidden"
            else:
                assert action.option_strings == ["--connection"]
                assert action.metavar == "NAME"
        assert "--name" not in action.option_strings or action.help == argparse.SUPPRESS


@pytest.mark.parametrize("name", ["connect", "check"])
def test_the_old_name_option_still_works(name: str) -> None:
    parser = command_parser_of(name)
    args = ["--list-id", "3fa85f64-5717-4562-b3fc-2c963f66afa6"] if name == "check" else []
    assert parser.parse_args(args).connection == "default"
    assert parser.parse_args([*args, "--name", "acme"]).connection == "acme"
    assert parser.parse_args([*args, "--connection", "acme"]).connection == "acme"
    assert "--name" not in parser.format_help()


def test_the_shared_builder_escapes_nothing_for_you_and_refuses_no_examples() -> None:
    parser = command_parser("demo", "Does a thing.", [("do it", "ccexport demo --n 3")])
    parser.add_argument("--n", type=int, default=3, help="how many")
    parser.add_argument("--share", type=float, default=0.2, help="at most 20%% of them")
    parser.add_argument("--flag", action="store_true", help="a switch")
    text = parser.format_help()
    assert "how many (default: 3)" in text
    assert "at most 20% of them (default: 0.2)" in text
    assert "a switch\n" in text  # a flag's default (off) is not shown
    assert text.rstrip().endswith("# do it\n  ccexport demo --n 3")
    with pytest.raises(ValueError, match="example"):
        command_parser("demo", "Does a thing.", [])
