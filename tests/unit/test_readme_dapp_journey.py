"""The README's dApp journey names only what exists: every `cvm` command and option in its
shell blocks is one the CLI accepts, every name it imports from `cvm.chain`/`cvm.sdk` is
exported, and every method it calls is one of the clients'. The journey itself runs on a
real guest in tests/e2e/test_real_guest_stack.py::dapp_journey; this keeps the text honest
when a command or a helper is renamed (before this test a renamed one went unnoticed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import typer

import cvm.chain
import cvm.sdk
from cvm.chain import AttestedServiceClient
from cvm.cli import app
from cvm.sdk import AttestationClient

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## dApp journey\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.S)


def shell_commands() -> list[list[str]]:
    commands = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "cvm":
                commands.append(words[1:])
    return commands


def test_every_cvm_command_and_option_exists() -> None:
    root = typer.main.get_command(app)
    commands = shell_commands()
    assert len(commands) >= 3, "the journey's measure, rent and ssh"
    for words in commands:
        command: click.Command = root
        rest = list(words)
        while isinstance(command, click.Group) and rest and rest[0] in command.commands:
            command = command.commands[rest.pop(0)]
        assert not isinstance(command, click.Group), f"cvm {' '.join(words)}: no such command"
        if "--" in rest:
            rest = rest[: rest.index("--")]  # what follows runs in the guest
        known = {opt for param in command.params for opt in param.opts}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"cvm {' '.join(words)}: no option {word}"


def test_the_guest_command_is_the_agents() -> None:
    ssh = next(words for words in shell_commands() if words[:2] == ["lease", "ssh"])
    remote = ssh[ssh.index("--") + 1 :]
    assert remote and "python3 /usr/lib/cvm/agent.py sign-result REQUEST" in remote[0]
    agent = (Path(__file__).resolve().parents[2] / "guest" / "agent.py").read_text()
    assert "agent.py sign-result REQUEST" in agent  # the agent's own usage line


def test_every_python_name_exists() -> None:
    python = "\n".join(blocks("python"))
    imported = re.findall(r"from (cvm\.\w+) import ([\w, ]+)", python)
    assert imported, "the journey imports from cvm"
    for module, names in imported:
        exported = {"cvm.chain": cvm.chain, "cvm.sdk": cvm.sdk}[module]
        for name in (part.strip() for part in names.split(",")):
            assert name in exported.__all__, f"{module} does not export {name}"
    for method in re.findall(r"\bdapp\.service\.(\w+)\(", python):
        assert callable(getattr(AttestedServiceClient, method, None)), method
    for method in re.findall(r"\bclient\.(\w+)\(", python):
        assert callable(getattr(AttestationClient, method, None)), method
    assert "verify_guest_result" in python and "verify_result" in python
