"""The web console's attestation page shows until when the verdict may be disputed and any
dispute with the EVM's outcome (issue 21). The backend's store holds what its indexer would
have after a dispute reversed a Verified verdict; no chain is needed for the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from backend.api import create_app
from backend.api.deps import AppContext
from backend.store import Store
from cvm.api_models import AttestationState, ChainInfo
from cvm.config import Settings
from tests.fixtures.processes import serving
from tests.unit.backend.factories import Clock
from tests.unit.backend.test_disputes import World, forger_sp

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = Store(f"sqlite:///{tmp_path / 'backend.db'}")
    try:
        yield World(store, Clock(1_800_000_000.0))
    finally:
        store.close()


def test_the_attestation_page_shows_the_window_and_a_reversed_verdict(
    page: Page, world: World, tmp_path: Path
) -> None:
    open_bundle = world.decided(1, AttestationState.VERIFIED)
    reversed_bundle = world.decided(2, AttestationState.VERIFIED, sp=forger_sp())
    world.event(
        "AttestationDisputed", 2, reportHash="0x" + reversed_bundle.report_hash.hex(),
        disputer="0x" + "88" * 20, overturned=True,
    )  # fmt: skip
    del open_bundle
    context = AppContext(
        settings=Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=str(world.store.url),
            rpc_url="http://127.0.0.1:9",  # no chain: the page reads the backend only
        ),
        store=world.store,
        chain=ChainInfo(
            chain_id=31337,
            node_registry="0x" + "11" * 20,
            lease_market="0x" + "22" * 20,
            attestation_registry="0x" + "33" * 20,
        ),
        clock=world.clock,
    )
    with serving(create_app(context)) as url:
        page.goto(f"{url}/#/leases/1/attestation")
        expect(page.locator("#attestation-status")).to_have_text("verified")
        # The store's clock is ahead of the browser's: the window is still open.
        expect(page.locator("#dispute-window")).to_contain_text("open until")
        expect(page.locator("#dispute-outcome")).to_have_text("none")
        page.goto(f"{url}/#/leases/2/attestation")
        expect(page.locator("#attestation-status")).to_have_text("rejected")
        outcome = page.locator("#dispute-outcome")
        expect(outcome).to_contain_text("REVERSED")
        expect(outcome).to_contain_text("verified verdict was wrong")
        expect(outcome).to_contain_text("0x" + "88" * 20)
