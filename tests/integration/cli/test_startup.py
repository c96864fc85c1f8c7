"""`cvm --help` stays fast because no command module imports the heavy libraries at start.

Timing belongs in `bench/cli_startup.py`; here, what is imported is asserted exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("web3", "eth_account", "eth_abi", "pydantic", "httpx", "celery", "sqlalchemy")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_building_the_cli_imports_no_heavy_library() -> None:
    loaded = _imported_after("import cvm.cli")
    assert "devstack.cli" in loaded, "the dev stack's commands joined as a plugin"
    assert sorted(name for name in HEAVY if name in loaded) == []


def test_help_imports_no_heavy_library() -> None:
    code = "from cvm.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    loaded = _imported_after(code)
    assert sorted(name for name in HEAVY if name in loaded) == []
