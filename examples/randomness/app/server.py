"""Verifiable randomness over HTTP, inside a cvm confidential VM.

    GET /random?request=<32 bytes hex>
        -> {"request", "value", "lease_id", "result_hash", "signer", "signature"}
    GET /health                          -> {"ok": true}

The value for a request is HMAC-SHA256(seed, request), where `seed` is 32 random bytes made
when the service starts and never written anywhere: nobody outside this guest (not the node's
operator, not the caller) can compute or choose it, and asking twice for one request gives the
same value (no grinding by asking again). The guest agent signs it as EIP-712
GuestResult(leaseId, request, keccak256(value)) with the guest's attested signer
(`python3 /usr/lib/cvm/agent.py sign-result REQUEST`, the value on stdin), which the example
contract AttestedRandomness checks against `attestedSignerOf(leaseId)`.

Standard library only (the guest's Debian python3.11).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

AGENT = os.environ.get("RANDOMNESS_AGENT", "/usr/lib/cvm/agent.py")
HOST = "127.0.0.1"  # the guest's TLS front forwards the declared port here
PORT = int(os.environ.get("RANDOMNESS_PORT", "8080"))
SIGN_TIMEOUT_S = 150  # the pure-Python secp256k1 signer is slow under emulation
REQUEST = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
SEED = secrets.token_bytes(32)


class SignError(Exception):
    """The guest agent did not sign."""


def value_for(request: bytes) -> bytes:
    return hmac.new(SEED, request, hashlib.sha256).digest()


def sign(request: bytes, value: bytes) -> dict[str, object]:
    """The guest agent's GuestResult signature over keccak256(value) for `request`."""
    try:
        result = subprocess.run(
            [sys.executable, AGENT, "sign-result", request.hex()],
            input=value,
            capture_output=True,
            timeout=SIGN_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SignError(f"the guest agent did not answer: {exc}") from None
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        answer = None
    if result.returncode != 0 or not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else result.stderr[-200:]
        raise SignError(f"the guest agent refused to sign: {error!r}")
    return answer


class Handler(BaseHTTPRequestHandler):
    server_version = "cvm-randomness/1"

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body, sort_keys=True).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(200, {"ok": True})
            return
        if url.path != "/random":
            self._send(404, {"error": "GET /random?request=<32 bytes hex> or /health"})
            return
        values = parse_qs(url.query).get("request", [])
        if len(values) != 1 or not REQUEST.match(values[0]):
            self._send(400, {"error": "request must be 32 bytes in hex (from requestRandomness)"})
            return
        request = bytes.fromhex(values[0].removeprefix("0x"))
        value = value_for(request)
        try:
            signed = sign(request, value)
        except SignError as exc:
            self._send(503, {"error": str(exc)})
            return
        self._send(
            200,
            {
                "request": "0x" + request.hex(),
                "value": "0x" + value.hex(),
                "lease_id": signed.get("lease_id"),
                "result_hash": "0x" + str(signed.get("result_hash", "")),
                "signer": signed.get("signer"),
                "signature": "0x" + str(signed.get("signature", "")),
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write("randomness: " + (format % args) + "\n")
        sys.stdout.flush()


def main() -> None:
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    print(f"randomness: listening on {HOST}:{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
