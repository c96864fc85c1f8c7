"""TLS pinned to the attested key (cvm.attested_tls, cvm.sdk.attested_client, `cvm lease
open|curl`): against real local TLS servers, one holding the key a simulated report binds and
one holding any other key. Only the lease's chain and backend are stand-ins (they serve the
real evidence bundle and the node's announcement); the evidence is checked for real."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from eth_account import Account
from typer.testing import CliRunner

from cvm.api_models import GuestAccessView, GuestPort
from cvm.attestation.binding import build_report_data, host_data
from cvm.attestation.evidence import EvidenceBundle
from cvm.attestation.release import ReleaseRefused
from cvm.attestation.sim import SimulatedSecureProcessor
from cvm.attested_tls import AttestedTlsError, PinMismatch, pinned_client, pinned_context
from cvm.chain import AttestationStatus
from cvm.cli import app
from cvm.sdk import attested_client
from guest.agent import GuestKeys
from tests.fixtures.processes import free_port
from tests.fixtures.tls import TlsServer, https_server

CHAIN_ID, REGISTRY, LEASE, NONCE = 31337, "0x" + "12" * 20, 5, 3
RENTER = Account.create()
MEASUREMENT = bytes(range(48))
GUEST_PORT = 8080


@pytest.fixture(scope="module")
def chip() -> SimulatedSecureProcessor:
    return SimulatedSecureProcessor("Milan")


@pytest.fixture(scope="module")
def attested() -> Iterator[TlsServer]:
    """The guest's service: its key is the one the report binds."""
    with https_server() as server:
        yield server


@pytest.fixture(scope="module")
def impostor() -> Iterator[TlsServer]:
    """Another server on the path (the node, a relay): any other key."""
    with https_server() as server:
        yield server


# --- pinned_client: the pin itself ------------------------------------------------------
def test_the_pinned_client_talks_to_the_attested_key(attested: TlsServer) -> None:
    with pinned_client(attested.host, attested.port, attested.spki_sha256) as http:
        answer = http.post("/put?k=v", content=b"value")
    assert answer.status_code == 200 and answer.text == "POST /put?k=v 5\n"
    assert ("POST", "/put?k=v", b"value") in attested.requests


def test_a_server_with_any_other_key_gets_nothing(attested: TlsServer, impostor: TlsServer) -> None:
    before = list(impostor.requests)
    with pytest.raises(PinMismatch, match="not the attested"):
        pinned_client(impostor.host, impostor.port, attested.spki_sha256)
    assert impostor.requests == before  # refused before any request was sent


def test_a_context_pinned_to_one_key_refuses_a_server_that_changed_since(
    attested: TlsServer, impostor: TlsServer
) -> None:
    """The second step: the pinned context trusts exactly the checked certificate, so a
    server swapped in after the check (same address, other key) fails the handshake."""
    context = pinned_context(attested.host, attested.port, attested.spki_sha256)
    with socket.create_connection((impostor.host, impostor.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw).do_handshake()
    with socket.create_connection((attested.host, attested.port), timeout=10) as raw:
        with context.wrap_socket(raw) as conn:
            assert conn.version() in ("TLSv1.3", "TLSv1.2")


def test_no_server_or_a_plain_one_is_a_clear_error() -> None:
    with pytest.raises(AttestedTlsError, match="no TLS server answers"):
        pinned_client("127.0.0.1", free_port(), bytes(32))
    with pytest.raises(AttestedTlsError, match="32 bytes"):
        pinned_client("127.0.0.1", free_port(), b"short")


# --- the SDK: the attested key from verified evidence ----------------------------------
@dataclass
class FakeChain:
    """The chain's word on the lease: terms, attestation, nonce, renter, deployment."""

    report_hash: bytes

    def __post_init__(self) -> None:
        self.leases = self
        self.attestations = self
        self.deployment = self

    chain_id = CHAIN_ID
    attestation_registry = REGISTRY

    def lease_terms(self, lease_id: int) -> Any:
        return type("Terms", (), {"expected_measurement": MEASUREMENT})

    def attestation_of(self, lease_id: int) -> Any:
        return type("Att", (), {"status": AttestationStatus.VERIFIED,
                                "report_hash": self.report_hash})  # fmt: skip

    def attestation_nonce(self, lease_id: int) -> int:
        return NONCE + 1

    def get_lease(self, lease_id: int) -> Any:
        return type("Lease", (), {"renter": RENTER.address})


class FakeApi:
    """The backend: the evidence bundle by report hash, the node's announcement."""

    def __init__(self, bundle: EvidenceBundle, ports: list[tuple[int, int]]) -> None:
        self.bundle, self.ports = bundle, ports

    def get_evidence(self, report_hash: str) -> bytes:
        assert report_hash == "0x" + self.bundle.report_hash.hex()
        return self.bundle.encode()

    def guest_access(self, lease_id: int) -> GuestAccessView:
        return GuestAccessView(
            lease_id=lease_id, node="0x" + "ab" * 20, host="127.0.0.1", ssh_port=2222,
            ports=[GuestPort(guest_port=g, host_port=h) for g, h in self.ports],
            updated_at=datetime.now(UTC),
        )  # fmt: skip


@dataclass
class FakeRenter:
    chain: FakeChain
    api: FakeApi

    def signed_in_api(self) -> FakeApi:
        return self.api


def renter_of(chip: SimulatedSecureProcessor, tls_spki_sha256: bytes, host_port: int) -> Any:
    """A renter whose lease's Verified report binds a guest key naming this TLS key."""
    guest_key = GuestKeys().public[:84] + tls_spki_sha256
    data = build_report_data(CHAIN_ID, REGISTRY, LEASE, NONCE, guest_key)
    launched = host_data(CHAIN_ID, REGISTRY, LEASE, RENTER.address)
    signed = chip.attest(measurement=MEASUREMENT, report_data=data, host_data=launched)
    bundle = EvidenceBundle(
        report=signed.report, vcek=signed.vcek_der, chain=signed.chain_pem, chain_id=CHAIN_ID,
        registry=REGISTRY, lease_id=LEASE, nonce=NONCE, guest_key=guest_key,
    )  # fmt: skip
    return FakeRenter(FakeChain(bundle.report_hash), FakeApi(bundle, [(GUEST_PORT, host_port)]))


def test_attested_client_reaches_the_guest_whose_key_the_report_binds(
    chip: SimulatedSecureProcessor, attested: TlsServer
) -> None:
    renter = renter_of(chip, attested.spki_sha256, attested.port)
    with attested_client(LEASE, GUEST_PORT, renter=renter, roots=[chip.ark]) as http:
        assert http.get("/health").text == "GET /health 0\n"
        assert str(http.base_url) == f"https://127.0.0.1:{attested.port}"


def test_attested_client_refuses_a_forward_to_a_server_with_another_key(
    chip: SimulatedSecureProcessor, attested: TlsServer, impostor: TlsServer
) -> None:
    """The node announces its own TLS server for the port: the report names another key."""
    renter = renter_of(chip, attested.spki_sha256, impostor.port)
    with pytest.raises(PinMismatch):
        attested_client(LEASE, GUEST_PORT, renter=renter, roots=[chip.ark])


def test_attested_client_needs_verified_evidence_and_a_forwarded_port(
    chip: SimulatedSecureProcessor, attested: TlsServer
) -> None:
    renter = renter_of(chip, attested.spki_sha256, attested.port)
    with pytest.raises(ReleaseRefused, match="root"):  # the simulated AMD-SP is not AMD
        attested_client(LEASE, GUEST_PORT, renter=renter)
    with pytest.raises(AttestedTlsError, match="forwards no guest port 9000"):
        attested_client(LEASE, 9000, renter=renter, roots=[chip.ark])


# --- the CLI ------------------------------------------------------------------------------
cli = CliRunner()


@pytest.fixture
def as_renter(monkeypatch: pytest.MonkeyPatch, chip: SimulatedSecureProcessor):
    """`cvm lease ...` acting as `renter`, trusting this test's simulated AMD-SP."""

    def use(renter: Any) -> None:
        monkeypatch.setattr("cvm.cli.guest.open_renter", lambda *a, **k: renter)
        monkeypatch.setattr("cvm.cli.guest._roots", lambda trust: [chip.ark] if trust else None)

    return use


def test_lease_open_prints_the_address_and_the_attested_fingerprint(
    chip: SimulatedSecureProcessor, attested: TlsServer, as_renter: Any
) -> None:
    as_renter(renter_of(chip, attested.spki_sha256, attested.port))
    done = cli.invoke(app, ["lease", "open", str(LEASE), str(GUEST_PORT),
                            "--trust-simulated-amd", "--json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert shown["address"] == f"127.0.0.1:{attested.port}"
    assert shown["fingerprint_sha256"] == attested.spki_sha256.hex()
    assert shown["fingerprint"].startswith("sha256/") and shown["amd_root"] == "simulated"
    human = cli.invoke(app, ["lease", "open", str(LEASE), str(GUEST_PORT),
                             "--trust-simulated-amd"])  # fmt: skip
    assert human.exit_code == 0 and attested.spki_sha256.hex() in human.output


def test_lease_curl_answers_only_from_the_attested_key(
    chip: SimulatedSecureProcessor, attested: TlsServer, impostor: TlsServer, as_renter: Any
) -> None:
    as_renter(renter_of(chip, attested.spki_sha256, attested.port))
    done = cli.invoke(app, ["lease", "curl", str(LEASE), str(GUEST_PORT), "/kv/a",
                            "-X", "PUT", "-d", "1234", "--trust-simulated-amd"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.stdout == "PUT /kv/a 4\n"
    as_json = cli.invoke(app, ["lease", "curl", str(LEASE), str(GUEST_PORT), "/x",
                               "--trust-simulated-amd", "--json"])  # fmt: skip
    assert json.loads(as_json.stdout)["status"] == 200

    before = list(impostor.requests)
    as_renter(renter_of(chip, attested.spki_sha256, impostor.port))
    refused = cli.invoke(app, ["lease", "curl", str(LEASE), str(GUEST_PORT), "/kv/a",
                               "--trust-simulated-amd"])  # fmt: skip
    assert refused.exit_code == 1
    assert "not the attested" in refused.output and "Traceback" not in refused.output
    assert impostor.requests == before


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["/x", "-X", "GET /"], 2, "not an HTTP method"),
        (["x"], 2, "PATH must start with /"),
        (["/a b"], 2, "PATH must start with /"),
        (["/x", "-d", "@/nonexistent/file"], 2, "cannot read"),
    ],
)
def test_lease_curl_refuses_a_malformed_request_before_connecting(
    chip: SimulatedSecureProcessor, attested: TlsServer, as_renter: Any,
    args: list[str], code: int, says: str,
) -> None:  # fmt: skip
    as_renter(renter_of(chip, attested.spki_sha256, attested.port))
    done = cli.invoke(app, ["lease", "curl", str(LEASE), str(GUEST_PORT), *args,
                            "--trust-simulated-amd"])  # fmt: skip
    assert done.exit_code == code and says in done.output, done.output


def test_lease_open_and_curl_fail_in_one_line_without_a_forward_or_a_server(
    chip: SimulatedSecureProcessor, attested: TlsServer, as_renter: Any
) -> None:
    as_renter(renter_of(chip, attested.spki_sha256, attested.port))
    done = cli.invoke(app, ["lease", "open", str(LEASE), "9000", "--trust-simulated-amd"])
    assert done.exit_code == 1 and "forwards no guest port 9000" in done.output
    as_renter(renter_of(chip, attested.spki_sha256, free_port()))  # the app is not up
    done = cli.invoke(app, ["lease", "curl", str(LEASE), str(GUEST_PORT), "/",
                            "--trust-simulated-amd"])  # fmt: skip
    assert done.exit_code == 1 and "no TLS server answers" in done.output
    assert "Traceback" not in done.output
    # Without --trust-simulated-amd the simulated report is refused, and the hint says so.
    done = cli.invoke(app, ["lease", "open", str(LEASE), str(GUEST_PORT)])
    assert done.exit_code == 1 and "--trust-simulated-amd" in done.output


def test_httpx_is_given_the_pinned_context_not_the_system_cas(attested: TlsServer) -> None:
    """A public CA could vouch for any key: none is loaded, the pin is the only anchor."""
    context = pinned_context(attested.host, attested.port, attested.spki_sha256)
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert context.cert_store_stats()["x509_ca"] + context.cert_store_stats()["x509"] == 1
    assert isinstance(httpx.Client(verify=context), httpx.Client)
