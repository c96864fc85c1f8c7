"""Concurrent senders from one account do not collide on nonces; stale nonces resync."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cvm.chain import Anvil, ChainClient, deploy
from tests.fixtures.chain import DEPOSIT, LEASE_SPEC, MAX_PRICE, MEASUREMENT, ChainSystem

pytestmark = pytest.mark.integration

THREADS = 6
PER_THREAD = 4


def test_threads_sharing_one_account_each_get_their_own_nonce(chain: ChainSystem) -> None:
    renter = chain.accounts.renter
    start_nonce = chain.anvil.w3.eth.get_transaction_count(renter.address)
    next_id = chain.client().leases.next_lease_id()

    def create_leases(_: int) -> list[int]:
        # A client per thread, as separate workers would have; the nonce record is shared.
        client = chain.client(renter)
        args = (LEASE_SPEC, MAX_PRICE, DEPOSIT // 100, MEASUREMENT)
        return [client.leases.create_lease(*args).lease_id for _ in range(PER_THREAD)]

    with ThreadPoolExecutor(THREADS) as pool:
        ids = [lease for batch in pool.map(create_leases, range(THREADS)) for lease in batch]

    assert sorted(ids) == list(range(next_id, next_id + THREADS * PER_THREAD))
    assert chain.anvil.w3.eth.get_transaction_count(renter.address) == start_nonce + len(ids)


def test_a_nonce_used_behind_our_back_is_resynced(chain: ChainSystem) -> None:
    renter = chain.accounts.renter
    client = chain.client(renter)
    client.token.transfer(chain.accounts.stranger.address, 1)  # caches the next nonce
    w3 = chain.anvil.w3
    # Another process spends that nonce with the same key, unseen by our record.
    nonce = w3.eth.get_transaction_count(renter.address)
    signed = renter.sign_transaction(
        {
            "to": chain.accounts.stranger.address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "nonce": nonce,
            "chainId": w3.eth.chain_id,
        }
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    client.token.transfer(chain.accounts.stranger.address, 2)
    assert client.token.balance_of(chain.accounts.stranger.address) == 3
    assert w3.eth.get_transaction_count(renter.address) == nonce + 2


def test_pipelined_sends_share_blocks_on_an_interval_mined_chain() -> None:
    """With a block time, transactions from one account queue up in the same blocks."""
    with Anvil(block_time=0.2) as node:
        deployer = node.dev_account(0)
        deployment = deploy(node.w3, deployer)
        sender = node.dev_account(1)
        start_block = node.w3.eth.block_number

        def mint(index: int) -> int:
            client = ChainClient(node.w3, deployment, sender)
            return client.token.mint(sender.address, index + 1).block_number

        with ThreadPoolExecutor(8) as pool:
            blocks = list(pool.map(mint, range(16)))
        client = ChainClient(node.w3, deployment)
        assert client.token.balance_of(sender.address) == sum(range(1, 17))
        assert node.w3.eth.get_transaction_count(sender.address) == 16
        # Fewer blocks than transactions: several of them were in flight at once.
        assert len(set(blocks)) < 16
        assert min(blocks) > start_block


def test_a_chain_switched_to_interval_mining_queues_transactions_into_blocks() -> None:
    """After `set_interval_mining`, sends no longer each get a block of their own: several
    in flight at once share one, and empty blocks keep coming without any transaction."""
    with Anvil() as node:  # mines each transaction at once, as the stack's setup does
        deployer = node.dev_account(0)
        deployment = deploy(node.w3, deployer)
        sender = node.dev_account(1)
        node.set_interval_mining(1)
        start_block = node.w3.eth.block_number

        def mint(index: int) -> int:
            client = ChainClient(node.w3, deployment, sender)
            return client.token.mint(sender.address, index + 1).block_number

        with ThreadPoolExecutor(4) as pool:
            blocks = list(pool.map(mint, range(8)))
        assert len(set(blocks)) < 8
        assert min(blocks) > start_block
        later = node.w3.eth.block_number
        # No transaction pending: the chain still moves on by itself.
        deadline = 30 + time.monotonic()
        while node.w3.eth.block_number <= later:
            assert time.monotonic() < deadline, "no block without transactions"
            time.sleep(0.1)
        with pytest.raises(ValueError, match="whole number"):
            node.set_interval_mining(0)
