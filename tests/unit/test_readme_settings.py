"""The README's configuration table is the `Settings` model, field for field.

Run as `python -m tests.unit.test_readme_settings` to rewrite the table after changing
`cvm/config.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

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


if __name__ == "__main__":
    text = README.read_text()
    README.write_text(_SECTION.sub(lambda m: m.group(1) + settings_table() + m.group(3), text))
