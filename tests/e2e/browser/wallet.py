"""A test-only EIP-1193 wallet: the page's provider forwards every request to this process.

The init script injects `window.ethereum` and announces it over EIP-6963, exactly where a
browser extension would; signing happens here with eth-account, everything else is sent to
the chain's RPC. Tests can set the chain the wallet reports and make it reject a method.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

INIT_SCRIPT = """
(() => {
  const listeners = {};
  const emit = (event, value) => (listeners[event] || []).forEach((f) => f(value));
  const provider = {
    async request({ method, params }) {
      const answer = await window.__cvmTestWallet(method, params || []);
      if (answer.error) {
        const error = new Error(answer.error.message);
        error.code = answer.error.code;
        throw error;
      }
      if (method === "wallet_switchEthereumChain") emit("chainChanged", params[0].chainId);
      return answer.result;
    },
    on(event, listener) { (listeners[event] ||= []).push(listener); },
    removeListener(event, listener) {
      listeners[event] = (listeners[event] || []).filter((f) => f !== listener);
    },
  };
  window.ethereum = provider;
  const info = {
    uuid: "6b1e9a52-2b5e-4c1f-9d55-0c3b8a3c1e01",
    name: "cvm test wallet",
    icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E",
    rdns: "org.cvm.testwallet",
  };
  const announce = () => window.dispatchEvent(
    new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
})();
"""

USER_REJECTED = 4001
UNKNOWN_CHAIN = 4902


class TestWallet:
    """Holds one key; answers the page's EIP-1193 requests (see the module docstring)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, rpc_url: str, account: LocalAccount, chain_id: int) -> None:
        self.rpc_url = rpc_url
        self.account = account
        self.chain_id = chain_id
        self.reject: set[str] = set()
        self.requests: list[str] = []
        self._http = httpx.Client(timeout=30)
        self._ids = 0

    @property
    def address(self) -> str:
        return str(self.account.address)

    def use(self, account: LocalAccount) -> None:
        self.account = account

    def rpc(self, method: str, params: list[Any]) -> Any:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        answer = self._http.post(self.rpc_url, json=body).json()
        if "error" in answer:
            raise WalletRpcError(answer["error"])
        return answer["result"]

    def handle(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.requests.append(method)
        if method in self.reject:
            return {"error": {"code": USER_REJECTED, "message": "User rejected the request."}}
        try:
            return {"result": self._answer(method, params)}
        except WalletRpcError as exc:
            return {"error": exc.error}

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.address]
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "wallet_switchEthereumChain":
            self.chain_id = int(params[0]["chainId"], 16)
            return None
        if method == "personal_sign":
            signed = self.account.sign_message(encode_defunct(hexstr=params[0]))
            return "0x" + signed.signature.hex().removeprefix("0x")
        if method == "eth_signTypedData_v4":
            signed = self.account.sign_typed_data(full_message=json.loads(params[1]))
            return "0x" + signed.signature.hex().removeprefix("0x")
        if method == "eth_sendTransaction":
            return self._send(params[0])
        return self.rpc(method, params)

    def _send(self, request: dict[str, Any]) -> str:
        assert request["from"].lower() == self.address.lower(), request
        tx: dict[str, Any] = {
            "to": request["to"],
            "data": request.get("data", "0x"),
            "value": int(request.get("value", "0x0"), 16),
            "chainId": self.chain_id,
            "nonce": int(self.rpc("eth_getTransactionCount", [self.address, "pending"]), 16),
            "gasPrice": 2 * int(self.rpc("eth_gasPrice", []), 16),
        }
        estimate = {"from": self.address, "to": tx["to"], "data": tx["data"]}
        tx["gas"] = (
            int(request["gas"], 16)
            if "gas" in request
            else int(int(self.rpc("eth_estimateGas", [estimate]), 16) * 1.3)
        )
        signed = self.account.sign_transaction(tx)
        raw = "0x" + signed.raw_transaction.hex().removeprefix("0x")
        return str(self.rpc("eth_sendRawTransaction", [raw]))

    def close(self) -> None:
        self._http.close()


class WalletRpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def new_key() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account
