"""The lease page's guest console in a real browser, against one real `cvm up`.

The stack's nodes are simulated (no guest, no serial console), so the test plays the lease's
node host: it ships a guest's console output with the agent's own `ConsoleRelay`, signed by
that node's key from the stack. The renter follows it as text (a host controls these bytes),
marked untrusted, with the lease's image beside it; nobody else sees it; and the page stops
asking once the lease is closed or the page is left.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Page, Request, expect

from cvm.api_client import ApiClient
from cvm.chain import LeaseStatus
from cvm.renter import Renter, RentRequest
from cvm.wallet import load_account
from devstack import DEMO_MEASUREMENT
from node_agent.console_relay import ConsoleRelay
from tests.e2e.browser.conftest import Console, connect_wallet
from tests.e2e.browser.wallet import TestWallet, new_key
from tests.fixtures.processes import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

IMAGE = "cvm-demo-guest@console-test"
# What a hostile host could put on the console: markup that runs script if parsed as HTML, an
# ANSI colour, a terminal title sequence, a bare carriage return and a right-to-left override.
BOOT = (
    b'SeaBIOS\r\nLinux <img src=x onerror="window.__pwned=1"><b>bold</b>\r\n'
    b"\x1b[31mred\x1b[0m \x1b]0;owned\x07 50%\r100%\n\xe2\x80\xaeevil\n"
)
BOOT_SHOWN = (
    'SeaBIOS\nLinux <img src=x onerror="window.__pwned=1"><b>bold</b>\n'
    "?[31mred?[0m ?]0;owned? 50%?100%\n?evil\n"
)
MORE = b"login: root\r\n\xe2\x9c\x93 ready\n"
MORE_SHOWN = "login: root\n✓ ready\n"
FOLLOW_INTERVAL_S = 3  # web/src/guest.js FOLLOW_INTERVAL_MS


def node_key_of(console: Console, node: str) -> LocalAccount:
    """The node key `cvm up` made for `node` (the one its agent signs with)."""
    record = next(n for n in console.stack.state["nodes"] if n["address"].lower() == node.lower())
    password = Path(record["node_password_file"]).read_text().strip()
    return load_account(Path(record["node_keystore"]), password)


@pytest.fixture
def lease(console: Console, wallet: TestWallet) -> Iterator[int]:
    """A lease of the test wallet, accepted by a node and indexed by the backend."""
    api = ApiClient(console.url)
    renter = Renter(console.chain.with_account(wallet.account), api)
    request = RentRequest(
        vcpu=1, memory_mib=1024, disk_gib=10, image=IMAGE, measurement=DEMO_MEASUREMENT,
        max_rate_per_second=10**13, deposit=10**13 * 3600,
    )  # fmt: skip
    lease_id = renter.rent(request)
    wait_for(
        lambda: api.get_lease(lease_id).node, 60, interval=0.5, what=f"lease {lease_id} accepted"
    )
    yield lease_id
    api.close()


def logs_reads(page: Page) -> list[str]:
    """The URLs of the page's console reads, as they happen."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if re.search(r"/v1/leases/\d+/logs", request.url):
            seen.append(request.url)

    page.on("request", record)
    return seen


def no_reads_for_two_intervals(page: Page, reads: list[str]) -> None:
    before = len(reads)
    page.wait_for_timeout(2 * FOLLOW_INTERVAL_S * 1000 + 500)
    assert reads[before:] == [], "the page still polls the console"


def test_the_renter_follows_the_console_as_text_and_nobody_else_reads_it(
    console_page: Page,
    wallet: TestWallet,
    console: Console,
    lease: int,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    page = console_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    reads = logs_reads(page)
    node = console.chain.leases.get_lease(lease).node_key
    with ApiClient(console.url) as api:
        relay = ConsoleRelay(api, node_key_of(console, node), tmp_path / "relay")
        assert relay.ship(lease, BOOT) == len(BOOT)  # what the guest wrote (QEMU's ring buffer)

        # No wallet yet: the page says whose console it is, and reads nothing.
        page.goto(f"{console.url}/#/leases/{lease}")
        section = page.locator("#guest-console")
        expect(section).to_contain_text("Connect the renter's wallet")
        expect(section.locator("#untrusted-badge")).to_have_text("UNTRUSTED")

        # The renter, not signed in yet: one click signs in (SIWE), then the console shows.
        connect_wallet(page)
        expect(page.locator("#guest-console-text")).to_have_count(0)
        page.get_by_role("button", name="Sign in to read the guest console").click()
        shown = page.locator("#guest-console-text")
        expect(shown).to_have_text(BOOT_SHOWN)
        assert shown.text_content() == BOOT_SHOWN  # to_have_text folds whitespace; this does not
        assert "personal_sign" in wallet.requests
        expect(section).to_contain_text("relayed by the node's host")
        expect(page.locator("#lease-image-id")).to_have_text(IMAGE)
        # Text only: the host's markup made no element and ran nothing.
        assert shown.locator("*").count() == 0
        assert page.locator("#main img, #main b").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert "\x1b" not in (shown.text_content() or "")
        page.screenshot(path=artifacts / "guest-console.png", full_page=True)

        # New output appears without a reload, read from where the page was.
        page.evaluate("window.__sameDocument = true")
        assert relay.ship(lease, MORE) == len(MORE)
        expect(shown).to_have_text(BOOT_SHOWN + MORE_SHOWN, timeout=4 * FOLLOW_INTERVAL_S * 1000)
        assert shown.text_content() == BOOT_SHOWN + MORE_SHOWN
        assert page.evaluate("window.__sameDocument") is True
        assert any(url.endswith(f"/logs?since={len(BOOT)}") for url in reads), reads

        # Leaving the page stops the reads.
        page.get_by_role("link", name="My leases").click()
        expect(page.get_by_role("heading", name="My leases")).to_be_visible()
        no_reads_for_two_intervals(page, reads)

        # Back on it the session is reused (no second signature); closing the lease ends the follow.
        signatures = wallet.requests.count("personal_sign")
        page.get_by_role("link", name=f"Lease {lease}").click()
        expect(shown).to_have_text(BOOT_SHOWN + MORE_SHOWN)
        assert wallet.requests.count("personal_sign") == signatures

        # A session the backend refuses (401): one line, and the sign-in button again.
        page.get_by_role("link", name="My leases").click()
        page.evaluate(
            """(key) => sessionStorage.setItem(key, JSON.stringify({ ...JSON.parse(
                 sessionStorage.getItem(key)), token: "refused" }))""",
            f"cvm.session.{wallet.address.lower()}",
        )
        page.get_by_role("link", name=f"Lease {lease}").click()
        expect(section).to_contain_text("Your sign-in has expired or was refused")
        expect(page.locator("#guest-console-text")).to_have_count(0)
        page.get_by_role("button", name="Sign in to read the guest console").click()
        expect(shown).to_have_text(BOOT_SHOWN + MORE_SHOWN)
        assert wallet.requests.count("personal_sign") == signatures + 1
        console.chain.with_account(wallet.account).leases.close_lease(lease)
        assert console.chain.leases.get_lease(lease).status == LeaseStatus.CLOSED
        expect(page.locator("#guest-console-status")).to_contain_text(
            "The lease is closed", timeout=4 * FOLLOW_INTERVAL_S * 1000
        )
        no_reads_for_two_intervals(page, reads)

    # Another wallet sees whose console it is, and no byte of it.
    wallet.use(new_key())
    before = len(reads)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    connect_wallet(page)
    expect(section).to_contain_text("for the lease's renter")
    expect(page.locator("#guest-console-text")).to_have_count(0)
    expect(page.locator("#lease-image")).to_be_empty()
    assert "SeaBIOS" not in (page.locator("#main").text_content() or "")
    page.screenshot(path=artifacts / "guest-console-stranger.png", full_page=True)
    assert reads[before:] == []
    assert errors == []


def test_the_renter_sees_each_service_port_with_its_attested_fingerprint(
    console_page: Page, wallet: TestWallet, console: Console, lease: int, artifacts: Path
) -> None:
    """The node announces a forwarded port (signed, as its guest relay does); the page shows
    its address and the TLS key the lease's report binds (the guest key's last 32 bytes, its
    SHA-256 checked against REPORT_DATA in the browser)."""
    from cvm.attestation.binding import fingerprint_text
    from cvm.attestation.evidence import EvidenceBundle

    page = console_page
    node = console.chain.leases.get_lease(lease).node_key
    with ApiClient(console.url) as api:
        api.announce_guest_access(
            lease, "127.0.0.1", 2222, node_key=node_key_of(console, node).key,
            ports=[(8080, 40001)],
        )  # fmt: skip
        report_hash = wait_for(
            lambda: api.attestation_status(lease).report_hash, 90, interval=0.5,
            what=f"lease {lease} attested",
        )  # fmt: skip
        bundle = EvidenceBundle.decode(api.get_evidence(report_hash))
    hex_form, pin = fingerprint_text(bundle.guest_key[84:])

    page.goto(f"{console.url}/#/leases/{lease}")
    connect_wallet(page)
    page.get_by_role("button", name="Sign in to read the guest console").click()
    row = page.locator('#guest-ports-table tr[data-port="8080"]')
    expect(row).to_contain_text("127.0.0.1:40001")
    expect(row.locator(".pin")).to_have_text(pin)
    expect(row.locator(".hex")).to_have_text(hex_form)
    expect(page.locator("#guest-ports")).to_contain_text(f"cvm lease curl {lease} PORT /PATH")
    page.screenshot(path=artifacts / "guest-ports.png", full_page=True)
