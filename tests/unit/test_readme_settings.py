"""The README's configuration table is the `Settings` model, field for field.

Run as `python -m tests.unit.test_readme_settings` to rewrite the table after changing
`cvm/config.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvm.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
_SECTION = re.compile(
    r"(<!-- settings-table:begin -->\n)(.*?)(<!-- settings-table:end -->)", re.DOTALL
)


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        # Paths made from the data directory read as `<data_dir>/...`.
        value = field.default_factory({"data_dir": Path("<data_dir>")})  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "unset"
    return f"`{value}`"


def settings_table() -> str:
    """The Markdown table of every setting: variable, default, description."""
    lines = ["| variable | default | what |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `CVM_{name.upper()}` | {_default(name)} | {description} |")
    return "\n".join(lines) + "\n"


def _current(text: str) -> str:
    match = _SECTION.search(text)
    assert match, "README.md lost its settings-table markers"
    return match.group(2)


def test_every_setting_is_documented_as_the_model_says() -> None:
    assert _current(README.read_text()) == settings_table(), (
        "README configuration table is stale: run python -m tests.unit.test_readme_settings"
    )


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_the_settings_file_is_the_one_cvm_settings_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "elsewhere.env"
    settings_file.write_text("CVM_RPC_URL=http://from-file:8545\nCVM_BROKER_URL=redis://file/0\n")
    monkeypatch.delenv("CVM_RPC_URL", raising=False)
    monkeypatch.setenv("CVM_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("CVM_BROKER_URL", "redis://env/0")
    settings = Settings()
    assert settings.rpc_url == "http://from-file:8545"
    assert settings.broker_url == "redis://env/0", "the environment wins over the file"


def test_every_local_path_follows_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEPLOYMENT_FILE", "DATABASE_URL", "SIM_AMD_DIR", "SETTINGS_FILE"):
        monkeypatch.delenv(f"CVM_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVM_DATA_DIR", "state")  # relative: anchored once, where it is read
    settings = Settings()
    assert settings.data_dir == tmp_path / "state"
    assert settings.deployment_file == tmp_path / "state" / "deployment.json"
    assert settings.sim_amd_dir == tmp_path / "state" / "sim-amd"
    assert settings.wallet_dir == tmp_path / "state" / "wallets"
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'backend.db'}"


def test_the_default_data_dir_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CVM_DATA_DIR", raising=False)
    monkeypatch.delenv("CVM_SETTINGS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    here = Settings().data_dir
    monkeypatch.chdir(tmp_path.parent)
    assert Settings().data_dir == here == Path("~/.cvm").expanduser()


if __name__ == "__main__":
    text = README.read_text()
    README.write_text(_SECTION.sub(lambda m: m.group(1) + settings_table() + m.group(3), text))
