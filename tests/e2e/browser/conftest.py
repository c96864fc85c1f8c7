"""The web console in Debian's Chromium (Playwright) against one real `cvm up` per module.

Every page gets the test wallet (`wallet.py`) injected before its scripts run. Screenshots
go to tests/artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, sync_playwright

from backend.api.console import CONSOLE_DIR
from cvm.chain import ChainClient, Deployment, connect
from cvm.chain.anvil import DEV_MNEMONIC
from cvm.wallet import load_account
from tests.e2e.browser.wallet import INIT_SCRIPT, TestWallet, new_key
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
TOKEN = 10**18


def _launch_args() -> dict[str, Any]:
    """Debian's Chromium: Playwright's own browser download is not possible here."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-packages` installs Debian's chromium")
    if not (CONSOLE_DIR / "index.html").is_file():
        pytest.fail(f"the web console is not built ({CONSOLE_DIR}): run `make web`")
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per module, and Playwright stopped with it.

    Playwright's sync API keeps an asyncio loop running in this thread while it is started;
    stopping it at the end of the module leaves later tests (qemu.qmp's sync wrappers run
    their own loop) a thread without a running loop.
    """
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**_launch_args())
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context and page for one test; it fails if the console's
    Content-Security-Policy blocked anything (the page would be broken in a real browser)."""
    context = browser.new_context()
    blocked: list[str] = []
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text
            else None,
        )
        yield page
    finally:
        context.close()
    assert not blocked, f"the console's CSP blocked: {blocked}"


@dataclass
class Console:
    """The stack as the browser tests see it: its URL, the chain, a faucet."""

    stack: Stack
    url: str
    deployment: Deployment
    chain: ChainClient
    admin: ChainClient

    def fund(self, address: str, tokens: int = 100) -> None:
        self.admin.token.mint(address, tokens * TOKEN)
        assert self.admin.sender is not None
        self.admin.sender.send({"to": address, "value": 10**18})

    def operator_of(self, node: str) -> LocalAccount:
        """The operator key `cvm up` made for `node` (its keystore beside a password file)."""
        record = next(n for n in self.stack.state["nodes"] if n["address"].lower() == node.lower())
        keys = self.stack.data_dir / "stack" / "keys"
        index = record["name"].removeprefix("node-")
        password = (keys / f"operator-{index}.password").read_text().strip()
        return load_account(keys / f"operator-{index}.json", password)


@pytest.fixture(scope="module")
def console(stack: Stack) -> Console:
    deployment = Deployment.load(stack.data_dir / "deployment.json")
    rpc_url = stack.state["rpc_url"]
    Account.enable_unaudited_hdwallet_features()
    deployer = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/0")
    return Console(
        stack=stack,
        url=stack.state["api_url"],
        deployment=deployment,
        chain=connect(deployment, rpc_url=rpc_url),
        admin=connect(deployment, deployer, rpc_url=rpc_url),
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def wallet(console: Console) -> Iterator[TestWallet]:
    """A fresh renter key with 100 tokens and 1 ether, on the stack's chain."""
    key = new_key()
    console.fund(key.address)
    wallet = TestWallet(console.stack.state["rpc_url"], key, console.deployment.chain_id)
    yield wallet
    wallet.close()


@pytest.fixture
def console_page(page: Page, wallet: TestWallet, console: Console) -> Page:
    page.set_default_timeout(30_000)
    page.add_init_script(INIT_SCRIPT)
    page.expose_function("__cvmTestWallet", wallet.handle)
    page.goto(console.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


def connect_wallet(page: Page) -> None:
    page.get_by_role("button", name="Connect cvm test wallet").click()
    page.wait_for_selector("#account")
