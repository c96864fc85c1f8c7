"""The web console in a real browser, as a person with a browser wallet uses it.

One `cvm up` stack for the module. The wallet is the test wallet of `wallet.py`: the page
talks to it through EIP-1193 exactly as it would to MetaMask.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from playwright.sync_api import Page, expect

from cvm.chain import LeaseSpec, LeaseStatus, NodeSpec, TeeType, connect, sign_node_consent
from tests.e2e.browser.conftest import TOKEN, Console, connect_wallet
from tests.e2e.browser.png import pixels
from tests.e2e.browser.wallet import TestWallet

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

VERIFIED_TIMEOUT_MS = 120_000
# The timeline marks a step done with this background (style.css: ol.timeline li.done).
DONE_GREEN = (0xEC, 0xFD, 0xF5)


def rent(page: Page) -> None:
    page.get_by_role("link", name="Rent").click()
    page.get_by_label("vCPU", exact=True).fill("2")
    page.get_by_role("button", name="Get a quote").click()
    expect(page.locator("#quote")).to_contain_text("Nodes that fit")
    page.get_by_role("button", name="Sign in and rent").click()


def test_marketplace_lists_nodes_and_fits_a_phone(console_page: Page, artifacts: Path) -> None:
    page = console_page
    expect(page.get_by_role("heading", name="Marketplace")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(3)
    expect(page.locator("tbody")).to_contain_text("SEV-SNP")
    page.screenshot(path=artifacts / "marketplace.png", full_page=True)
    # Priced the way renters think: tokens per hour for a VM of the chosen size (2 vCPU by
    # default), cheapest first; the chain's base units only behind the toggle.
    first = page.locator("tbody tr").first
    expect(first).to_contain_text("0.0072")  # 1e12 base units per vCPU-second x 2 x 3600 s
    expect(first).to_contain_text("per hour")
    expect(first).not_to_contain_text("base units")
    page.get_by_label("Price a VM of this many vCPU").fill("4")
    expect(first).to_contain_text("0.0144")
    page.get_by_label("Show base units").check()
    expect(first).to_contain_text("1000000000000 base units per vCPU-second")
    # One click on the header reverses the order.
    page.get_by_role("button", name="Price per hour").click()
    expect(first).to_contain_text("3000000000000 base units per vCPU-second")
    expect(first).to_contain_text("0.0432")  # 3e12 x 4 x 3600
    page.get_by_label("At least this many free vCPU").fill("10")
    expect(page.locator("tbody tr")).to_have_count(1)
    # Keyboard only: Tab along the navigation, Enter opens the page and focuses its heading.
    page.get_by_role("link", name="Marketplace").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Rent")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Rent a confidential VM")).to_be_focused()
    page.goto(page.url.split("#")[0] + "#/")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector("tbody tr")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    page.screenshot(path=artifacts / "marketplace-phone.png", full_page=True)


def test_wrong_network_offers_the_switch(
    console_page: Page, wallet: TestWallet, console: Console, artifacts: Path
) -> None:
    page = console_page
    wallet.chain_id = 1
    connect_wallet(page)
    banner = page.locator("#network")
    expect(banner).to_contain_text("Wrong network")
    page.screenshot(path=artifacts / "wrong-network.png", full_page=True)
    page.get_by_role("button", name=f"Switch to chain {console.deployment.chain_id}").click()
    expect(banner).to_be_empty()
    assert wallet.chain_id == console.deployment.chain_id


def test_rejected_permit_leaves_nothing_half_done(
    console_page: Page, wallet: TestWallet, console: Console
) -> None:
    page = console_page
    leases_before = console.chain.leases.next_lease_id()
    balance_before = console.chain.token.balance_of(wallet.address)
    wallet.reject.add("eth_signTypedData_v4")
    connect_wallet(page)
    rent(page)
    # The quote reads in tokens per hour for this VM; the chain's base units behind a toggle.
    quote = page.locator("#quote")
    expect(quote).to_contain_text("0.0072")  # 1e12 base units per vCPU-second x 2 x 3600 s
    expect(quote).to_contain_text("per hour for this VM")
    expect(quote.get_by_text("1000000000000 base units per vCPU-second")).to_be_hidden()
    quote.get_by_text("Base units (what the chain stores)").click()
    expect(quote.get_by_text("1000000000000 base units per vCPU-second")).to_be_visible()
    expect(page.locator("#result")).to_contain_text("You rejected the request")
    expect(page.locator("#result")).to_contain_text("No lease was created")
    assert "eth_sendTransaction" not in wallet.requests
    assert console.chain.leases.next_lease_id() == leases_before
    assert console.chain.token.balance_of(wallet.address) == balance_before
    # The button is usable again: accepting the signature now rents.
    wallet.reject.clear()
    page.get_by_role("button", name="Sign in and rent").click()
    expect(page.get_by_role("heading", name=f"Lease {leases_before}")).to_be_visible()


def test_rent_drops_a_session_the_backend_refused(
    console_page: Page, wallet: TestWallet, console: Console
) -> None:
    """A saved sign-in the backend no longer accepts (it restarted, or the session ended early)
    is forgotten at its 401, and the next click signs in afresh and rents.

    Fails on the old code: the refused token stayed in sessionStorage, so every later click
    sent it again and failed the same way until the tab was closed."""
    page = console_page
    connect_wallet(page)
    key = f"cvm.session.{wallet.address.lower()}"
    stale = {"token": "a-token-the-backend-never-issued", "address": wallet.address,
             "expiresAt": "2099-01-01T00:00:00Z"}  # fmt: skip
    page.evaluate("([key, value]) => sessionStorage.setItem(key, value)", [key, json.dumps(stale)])
    rent(page)
    expect(page.locator("#result [role=alert]")).to_be_visible()  # the backend's 401, shown
    assert page.evaluate("(key) => sessionStorage.getItem(key)", key) is None
    expect(page.locator("#result")).to_contain_text("no longer accepts your sign-in")
    assert "personal_sign" not in wallet.requests  # the stale session was tried, not a new one
    lease_id = console.chain.leases.next_lease_id()
    page.get_by_role("button", name="Sign in and rent").click()
    expect(page.get_by_role("heading", name=f"Lease {lease_id}")).to_be_visible()
    assert "personal_sign" in wallet.requests


def test_rent_watch_verified_live_top_up_close_and_operator_claims(
    console_page: Page, wallet: TestWallet, console: Console, artifacts: Path
) -> None:
    page = console_page
    connect_wallet(page)
    lease_id = console.chain.leases.next_lease_id()
    rent(page)
    expect(page.get_by_role("heading", name=f"Lease {lease_id}")).to_be_visible()
    # Sign-in, the permit, one transaction: nothing else asked of the wallet.
    signing = ("personal_sign", "eth_signTypedData_v4", "eth_sendTransaction")
    assert [m for m in wallet.requests if m in signing] == list(signing)
    verified = page.locator('#timeline li[data-step="verified"]')
    expect(verified).to_have_class("done", timeout=VERIFIED_TIMEOUT_MS)
    for step in ("created", "matched", "accepted", "launched", "report_submitted"):
        expect(page.locator(f'#timeline li[data-step="{step}"]')).to_have_class("done")
    # `cvm up`'s verifier trusts the stack's simulated AMD-SP: "verified" says so, visibly.
    expect(page.locator("#simulated-badge")).to_have_text("SIMULATED AMD-SP")
    expect(page.locator("#simulated-badge")).to_be_visible()
    expect(verified).to_contain_text("SIMULATED AMD-SP")
    page.screenshot(path=artifacts / "lease-verified.png", full_page=True)
    # Visual check: the verified step is drawn in the "done" green.
    shot = verified.screenshot(path=artifacts / "timeline-verified-step.png")
    green = sum(1 for pixel in pixels(shot) if pixel == DONE_GREEN)
    assert green > len(pixels(shot)) // 2, "the verified step is not drawn as done"

    page.get_by_role("link", name="Attestation detail").click()
    expect(page.locator("#attestation-status")).to_have_text("verified")
    expect(page.get_by_text("SIMULATED").first).to_be_visible()
    expect(page.locator("#reason-codes")).to_contain_text("none")
    page.get_by_role("button", name="Verify in my browser").click()
    expect(page.locator("#browser-check")).to_contain_text("all three checks passed")
    expect(page.locator("#browser-check")).to_contain_text("Not checked here")
    page.screenshot(path=artifacts / "attestation.png", full_page=True)

    page.get_by_role("link", name="Lease lookup").click()
    page.get_by_label("Lease id").fill(str(lease_id))
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#is-attested")).to_have_text("true")
    expect(page.locator("#lookup-result")).to_contain_text("client.is_attested")
    page.screenshot(path=artifacts / "lookup.png", full_page=True)

    page.goto(f"{console.url}/#/leases/{lease_id}")
    deposit = console.chain.leases.get_lease(lease_id).deposit
    page.get_by_label("Top-up amount (tokens)").fill("0.5")
    page.get_by_role("button", name="Top up (approve + top-up)").click()
    expect(page.locator("#lease-result")).to_contain_text("Topped up 0.5")
    assert console.chain.leases.get_lease(lease_id).deposit == deposit + TOKEN // 2

    balance = console.chain.token.balance_of(wallet.address)
    page.get_by_role("button", name="Close lease…").click()
    expect(page.locator("#refund-preview")).to_be_visible()
    page.screenshot(path=artifacts / "close-preview.png", full_page=True)
    page.get_by_role("button", name="Close and get the refund").click()
    expect(page.locator("#lease-result")).to_contain_text("Lease closed. Refunded")
    refund = console.chain.token.balance_of(wallet.address) - balance
    assert refund > 0
    assert console.chain.leases.get_lease(lease_id).status == LeaseStatus.CLOSED
    page.screenshot(path=artifacts / "lease-closed.png", full_page=True)
    page.get_by_role("link", name="My leases").click()
    expect(page.get_by_role("link", name=f"Lease {lease_id}")).to_be_visible()
    page.screenshot(path=artifacts / "my-leases.png", full_page=True)

    # The operator of the node that served the lease claims its earnings in the browser.
    node = console.chain.leases.get_lease(lease_id).node_key
    owed = console.chain.leases.claimable(lease_id)
    assert owed > 0
    operator = console.operator_of(node)
    wallet.use(operator)
    page.goto(f"{console.url}/#/operator")
    page.reload()
    connect_wallet(page)
    page.get_by_role("link", name="Operator").click()
    card = page.locator(f'[data-node="{node}"]')
    before = console.chain.token.balance_of(operator.address)
    card.get_by_role("button", name="Claim earnings").click()
    expect(page.locator("#main")).to_contain_text("Claimed")
    assert console.chain.leases.claimable(lease_id) == 0
    assert console.chain.token.balance_of(operator.address) >= before + owed
    page.screenshot(path=artifacts / "operator.png", full_page=True)


def _advance(console: Console, seconds: int) -> None:
    """Move the stack's chain clock on (the last test of the module: nothing after relies on it)."""
    w3 = console.chain.w3
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("anvil_mine", ["0x1"])  # type: ignore[arg-type]


def test_close_during_a_pending_attestation_shows_the_held_part_and_releases_it(
    console_page: Page, wallet: TestWallet, console: Console, artifacts: Path
) -> None:
    """The renter can always close: the console closes at once while an attestation awaits the
    verifiers, says how much is held and what becomes of it, and once the verifiers' window
    passed without a verdict offers the release, which refunds and withdraws it. Fails on the
    old console, which showed the whole refundable deposit as the refund and nothing held.

    The lease asks for more stake than any of the stack's nodes has, so only this test's own
    node key takes it, and no evidence is ever uploaded: the verifiers never approve."""
    chain, deployment, rpc_url = console.chain, console.deployment, console.stack.state["rpc_url"]
    stakes = [chain.nodes.get_node(n["address"]).stake for n in console.stack.state["nodes"]]
    stake = max([*stakes, chain.nodes.min_stake()]) + TOKEN
    operator, node_key, signer = Account.create(), Account.create(), Account.create()
    console.fund(operator.address, tokens=stake // TOKEN + 1)
    console.fund(node_key.address, tokens=1)
    as_operator = connect(deployment, operator, rpc_url=rpc_url)
    spec = NodeSpec(TeeType.SEV_SNP, 4, 8192, 100, 276, 10**9)
    consent = sign_node_consent(node_key, operator.address, deployment)
    as_operator.nodes.register(node_key.address, spec, "", node_key_signature=consent)
    as_operator.token.approve(deployment.node_registry, stake)
    as_operator.nodes.stake(node_key.address, stake)

    measurement = b"\x5a" * 48
    renter = connect(deployment, wallet.account, rpc_url=rpc_url)
    lease_spec = LeaseSpec(TeeType.SEV_SNP, 2, 4096, 20, stake, 3600, b"\xc0" * 32)
    renter.token.approve(deployment.lease_market, 10 * TOKEN)
    lease_id = renter.leases.create_lease(lease_spec, 4 * 10**9, 10 * TOKEN, measurement).lease_id
    as_node = connect(deployment, node_key, rpc_url=rpc_url)
    as_node.leases.accept_lease(lease_id)
    as_node.attestations.submit(
        lease_id,
        as_node.attestations.attestation_nonce(lease_id),
        b"\x77" * 32,
        measurement,
        7,
        b"\xcc" * 32,
        signer=signer.address,
    )
    _advance(console, 120)  # two minutes of service await the verdict

    page = console_page
    connect_wallet(page)
    page.goto(f"{console.url}/#/leases/{lease_id}")
    balance = chain.token.balance_of(wallet.address)
    # The lease page draws its actions after its chain reads: slow on a loaded machine.
    expect(page.get_by_role("button", name="Close lease…")).to_be_visible(timeout=90_000)
    page.get_by_role("button", name="Close lease…").click()
    expect(page.locator("#hold-preview")).to_contain_text("held in escrow")
    page.get_by_role("button", name="Close and get the refund").click()
    result = page.locator("#lease-result")
    expect(result).to_contain_text("Lease closed. Refunded")
    expect(result).to_contain_text("is held until the verifiers decide")
    held = chain.leases.held_escrow(lease_id)
    assert held is not None and held.amount > 0 and not held.releasable
    expect(page.locator("#held")).to_contain_text("paid to the node only if the verifiers verify")
    refund = chain.token.balance_of(wallet.address) - balance
    assert refund > 0 and refund + held.amount + chain.leases.earned(lease_id) == 10 * TOKEN
    page.screenshot(path=artifacts / "lease-closed-held.png", full_page=True)

    _advance(console, chain.attestations.verification_window() + 1)  # no verdict came
    page.reload()
    connect_wallet(page)
    page.get_by_role("button", name="Release the held escrow").click()
    expect(result).to_contain_text("refunded to the renter and withdrawn to your wallet")
    assert chain.leases.held_escrow(lease_id) is None
    assert chain.token.balance_of(wallet.address) == balance + refund + held.amount
