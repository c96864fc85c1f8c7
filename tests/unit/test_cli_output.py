"""The CLI's output rules: untrusted text made inert (`printable`, `literal`, the consoles'
guard) and prices in the units renters think in (tokens per hour for the VM, base units per
second beside). The filter and the guard did not exist before issue 18 (these fail there)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rich.console import Console
from rich.text import Text

from cvm.api_models import NodeView
from cvm.cli.plumbing import (
    UsageError,
    _GuardedStream,
    format_duration,
    format_rate,
    literal,
    parse_rate,
    printable,
)
from cvm.cli.renter import quote, quote_text
from cvm.renter import RentRequest

HOSTILE = "a\x1b]0;title\x07b\x1b]52;c;eA==\x07c\x1b[2Jd\x9b2Je\u202ef\u2066g\r\nh\ti"


def test_printable_keeps_the_lines_of_a_console_only() -> None:
    assert printable(HOSTILE) == "a?]0;title?b?]52;c;eA==?c?[2Jd?2Je?f?g\nh\ti"
    assert printable(HOSTILE, multiline=False) == "a?]0;title?b?]52;c;eA==?c?[2Jd?2Je?f?g??h?i"


def test_literal_shows_markup_as_text() -> None:
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(f"reason: {literal('[bold red]FAKE[/] [link=https://x.test]y[/link]')}")
    assert captured.get() == "reason: [bold red]FAKE[/] [link=https://x.test]y[/link]\n"


def test_the_guard_passes_richs_own_styles_and_nothing_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value that reached Rich without `literal` still cannot act on the terminal."""
    console = Console(file=_GuardedStream(False), force_terminal=True, color_system="standard")  # type: ignore[arg-type]
    console.print(Text(HOSTILE, style="bold"))
    shown = capsys.readouterr().out
    assert "\x1b[1m" in shown  # Rich's own style
    for raw in ("\x1b]", "\x07", "\x1b[2J", "\x9b", "\u202e", "\u2066"):
        assert raw not in shown, repr(shown)


@pytest.mark.parametrize(
    ("typed", "base_per_second"),
    [
        ("0.072/h", 20_000_000_000_000),  # the default: 0.072 tokens an hour
        ("0.072 / H", 20_000_000_000_000),
        ("0.00002", 20_000_000_000_000),  # a bare number stays per second, as before
        ("0.00002/s", 20_000_000_000_000),
        ("1000base/s", 1000),
        ("7200base/h", 2),
        ("0.1/h", 27_777_777_777_777),  # rounded down: never more than the renter said
    ],
)
def test_prices_are_typed_per_hour_or_per_second(typed: str, base_per_second: int) -> None:
    assert parse_rate(typed, "--max-price", 18) == base_per_second


@pytest.mark.parametrize("typed", ["1base/h", "abc/h", "-1/h", "0/s", "1/d"])
def test_a_bad_price_is_a_usage_error(typed: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(typed, "--max-price", 18)


def test_prices_read_per_hour_with_base_units_beside() -> None:
    assert format_rate(20_000_000_000_000, 18) == "0.072 tokens/h (20000000000000 base/s)"
    assert format_rate(1, 6) == "0.0036 tokens/h (1 base/s)"
    assert format_duration(int(Decimal(3 * 3600 + 20 * 60))) == "3 h 20 min"


def test_the_rent_quote_prices_the_whole_vm_per_hour() -> None:
    node = NodeView(
        address="0x" + "11" * 20, operator="0x" + "22" * 20, tee_type=1, vcpus=16,
        memory_mib=65536, disk_gib=500, region=0, price_per_vcpu_second=10**12, stake=1,
        active=True, endpoint="", reputation=1.0,
    )  # fmt: skip
    request = RentRequest(
        vcpu=2, memory_mib=4096, disk_gib=20, image="x", measurement=b"\0" * 48,
        max_rate_per_second=20_000_000_000_000, deposit=72 * 10**15,
    )  # fmt: skip
    offer = quote([node], request, 18)
    assert offer["cheapest_rate_per_second"] == 2 * 10**12  # JSON: base units per second
    text = quote_text(offer, request, 18)
    assert "the cheapest costs 0.0072 tokens/h (2000000000000 base/s)" in text
    assert "your max is 0.072 tokens/h (20000000000000 base/s)" in text
    assert "lasts 10 h 0 min at that rate (at least 60 min)" in text


_IN_A_TERMINAL = r"""
from rich.live import Live
from rich.text import Text
from cvm.cli.plumbing import out
with Live(Text("phase 1"), console=out()) as live:
    print("printed while live")  # through Rich's stdout proxy, back to the same console
    live.update(Text("phase 2"))
out().print(Text("raw: \x1b]0;title\x07 \x1b]52;c;eA==\x07 \x1b[2J end", style="bold"))
"""


def test_a_real_terminal_gets_richs_styles_and_live_display_but_no_foreign_sequence() -> None:
    """In a pseudo-terminal (where Rich does write escape sequences): the live display and
    its stdout proxy work through the guard, and a foreign OSC or CSI 2J does not pass."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", _IN_A_TERMINAL], stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, data
    shown = data.decode()
    assert "printed while live" in shown and "phase 2" in shown
    assert "\x1b[1m" in shown  # Rich's own style reaches the terminal
    assert "raw: ?]0;title ?]52;c;eA== ?[2J end" in shown  # (Rich drops BEL itself)
    for raw in ("\x1b]", "\x07", "\x1b[2J"):
        assert raw not in shown, repr(shown)
