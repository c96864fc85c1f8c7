"""The README's "Run your own service" names only what exists: every `cvm` command and option of
its block is one the CLI accepts, the example it builds is in the repository and is a valid
workload with a disk and a port, and `make demo-service` runs `cvm demo --workload` on it.
The commands themselves run as written on a real guest in tests/e2e/test_service_journey.py;
this keeps the text honest on every run without a guest."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import typer

from cvm.cli import app

REPO = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Run your own service\n")
    return text[start : text.index("\n## ", start + 1)]


def commands() -> list[list[str]]:
    (block,) = re.findall(r"```sh\n(.*?)```", section(), flags=re.S)
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "cvm":
            found.append(words[1:])
    return found


def test_every_command_and_option_exists() -> None:
    root = typer.main.get_command(app)
    typed = commands()
    assert len(typed) >= 8
    for words in typed:
        command: click.Command = root
        rest = list(words)
        while isinstance(command, click.Group) and rest and rest[0] in command.commands:
            command = command.commands[rest.pop(0)]
        assert not isinstance(command, click.Group), f"cvm {' '.join(words)}: no such command"
        known = {opt for param in command.params for opt in param.opts}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in known, f"cvm {' '.join(words)}: no option {word}"


def test_the_example_is_a_workload_with_a_disk_and_a_port() -> None:
    from cvm.images.workload import load_workload

    build = next(words for words in commands() if words[:2] == ["image", "build"])
    path = REPO / build[build.index("--workload") + 1]
    workload = load_workload(path)
    summary = workload.summary()
    assert summary["disk"], "the stateful example keeps its data on the encrypted volume"
    ports = [port["port"] for port in summary["ports"]]
    for words in commands():
        if words[:2] in (["lease", "open"], ["lease", "curl"]):
            assert int(words[3]) in ports, words


def test_make_demo_service_runs_the_readmes_example() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo-service:") :].split("\n\n")[0]
    assert "cvm demo --workload examples/kv-store/workload.toml" in recipe
    assert "make demo-service" in section()
