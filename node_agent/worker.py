"""Run the agent: one Celery worker on the node's queue, with the scheduler beside it."""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount

from cvm.config import Settings
from cvm.dispatch import node_queue
from node_agent.runtime import build_agent
from node_agent.tasks import Scheduler, make_celery, register_tasks


def run_worker(settings: Settings, account: LocalAccount, *, concurrency: int = 4) -> None:
    """Consume `node.<address>` until stopped (SIGTERM/SIGINT), reconciling on a schedule.

    A thread pool in one process: the node key's transactions then share one nonce
    record (see `cvm.chain.sender`), and nothing outlives the process.
    """
    agent = build_agent(settings, account)
    app = make_celery(
        settings.broker_url,
        account.address,
        visibility_timeout_s=settings.node_task_visibility_timeout_s,
    )
    register_tasks(app, lambda: agent, settings.node_task_max_retries)
    scheduler = Scheduler(
        agent, settings.node_reconcile_interval_s, settings.node_heartbeat_interval_s
    )
    scheduler.start()
    log = logging.getLogger(__name__)
    log.info("node agent %s consuming %s", account.address, node_queue(account.address))
    if not settings.node_measurement_list:
        log.warning("no CVM_NODE_MEASUREMENTS configured: every lease will be refused")
    try:
        worker = app.Worker(
            queues=[node_queue(account.address)],
            pool="threads",
            concurrency=concurrency,
            hostname=f"cvm-node-{account.address.lower()}@%h",
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            loglevel="INFO",
        )
        worker.start()
    finally:
        scheduler.stop()
