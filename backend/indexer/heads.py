"""New blocks announced by the chain: `eth_subscribe("newHeads")` over WebSocket.

The backend's loop indexes as soon as a block is announced instead of waiting out its
poll interval; polling stays the fallback whenever the subscription is not available
(no WebSocket endpoint, a dropped link), and the listener reconnects by itself. Failures
are logged once with a count, not on every retry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from backend.repeats import RepeatedConditions

log = logging.getLogger(__name__)

RECONNECT_S = 2.0


def websocket_url(rpc_url: str) -> str:
    """The WebSocket twin of an HTTP RPC URL (anvil and most nodes serve both on one port)."""
    if rpc_url.startswith("https://"):
        return "wss://" + rpc_url[len("https://") :]
    if rpc_url.startswith("http://"):
        return "ws://" + rpc_url[len("http://") :]
    return rpc_url


class NewHeads:
    """A daemon thread that calls `on_head(block_number)` for every announced block."""

    def __init__(self, ws_url: str, on_head: Callable[[int], None]) -> None:
        self.ws_url = ws_url
        self.on_head = on_head
        self.subscribed = threading.Event()  # set while a subscription is live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failures = RepeatedConditions(log, level=logging.WARNING)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cvm-new-heads", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        loop = self._loop
        if loop is not None:
            try:
                for task in asyncio.all_tasks(loop):
                    loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the listener's loop already ended (closed) on its own
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)  # this thread's own; no other thread sees it
        try:
            while not self._stop.is_set():
                try:
                    self._loop.run_until_complete(self._follow())
                except asyncio.CancelledError:
                    break
                except Exception as exc:  # any transport failure: poll meanwhile, retry later
                    self.subscribed.clear()
                    self._failures.report(
                        "ws",
                        "new-block subscription at %s unavailable (%s); indexing by polling",
                        self.ws_url,
                        type(exc).__name__,
                    )
                self._stop.wait(RECONNECT_S)
        finally:
            self._shut_down(self._loop)

    @staticmethod
    def _shut_down(loop: asyncio.AbstractEventLoop) -> None:
        """Let the WebSocket close its transport before the loop goes (no stray warnings)."""
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()

    async def _follow(self) -> None:
        # The subscription needs web3's async WebSocket provider, which cvm.chain's one
        # HTTP constructor does not cover; this is its only use.
        from web3 import AsyncWeb3, WebSocketProvider

        async with AsyncWeb3(WebSocketProvider(self.ws_url)) as w3:
            await w3.eth.subscribe("newHeads")
            self.subscribed.set()
            self._failures.clear("ws")
            log.info("following new blocks by subscription at %s", self.ws_url)
            async for message in w3.socket.process_subscriptions():
                if self._stop.is_set():
                    return
                result = message.get("result") if isinstance(message, dict) else None
                number = result.get("number") if isinstance(result, dict) else None
                self.on_head(int(number) if number is not None else -1)
        self.subscribed.clear()
