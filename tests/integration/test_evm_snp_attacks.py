"""Attacks on the EVM's SEV-SNP report check (SnpVerifier), on real anvils (Cancun and Osaka).

Who profits from fooling it: a node wanting a forged report to stand (a dispute must be able
to prove the forgery), and a disputer wanting a genuine report refused. Each test is one
attack and what the contract must do about it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_utils import keccak

from cvm.attestation.onchain import (
    SnpReason,
    ark_certificates,
    cert_hash,
    der,
    prepare_report_call,
)
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.attestation.verify import verify_amd_signature
from cvm.chain import (
    TX_GAS_CAP,
    Anvil,
    ContractRevert,
    EventDecoder,
    SnpVerifierClient,
    TransactionSender,
    deploy_snp_verifier,
    load_artifact,
    revert_decoder,
)

pytestmark = pytest.mark.integration

SNP_DATA = Path(__file__).resolve().parents[1] / "data" / "snp"
N384 = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


def _client(anvil: Anvil, arks: list[bytes]) -> SnpVerifierClient:
    account = anvil.dev_account(8)
    address = deploy_snp_verifier(anvil.w3, account, arks)
    events = EventDecoder({"SnpVerifier": (address, load_artifact("SnpVerifier").abi)})
    sender = TransactionSender(anvil.w3, account, revert_decoder())
    return SnpVerifierClient(anvil.w3, address, events, sender)


@dataclass(frozen=True)
class Chain:
    hardfork: str
    anvil: Anvil
    amd: SnpVerifierClient


@pytest.fixture(scope="module", params=["cancun", "osaka"])
def snp(request: pytest.FixtureRequest) -> Iterator[Chain]:
    with Anvil(hardfork=request.param, enforce_tx_gas_cap=True) as node:
        yield Chain(request.param, node, _client(node, ark_certificates()))


def _real(name: str) -> tuple[bytes, bytes]:
    report = (SNP_DATA / "reports" / f"{name}.bin").read_bytes()
    vcek = (SNP_DATA / "vcek" / f"{name}.der").read_bytes()
    return report, vcek


def _with_signature(report: bytes, r: int, s: int) -> bytes:
    out = bytearray(report)
    out[0x2A0:0x2D0] = r.to_bytes(48, "little")
    out[0x2E8:0x318] = s.to_bytes(48, "little")
    return bytes(out)


def _worst_case_forgery(report: bytes) -> bytes:
    """A forged report (another MEASUREMENT) whose (r, s) make u1 = e/s and u2 = r/s cover
    every one of the 384 bit positions: the dearest path through the P-384 ladder (one point
    addition per bit) that a forger can choose to make a dispute run out of gas."""
    forged = bytearray(report)
    forged[0x90] ^= 0xFF
    e = int.from_bytes(hashlib.sha384(bytes(forged[:0x2A0])).digest(), "big") % N384
    u1 = N384 - 1
    u2 = ((1 << 384) - 1) ^ u1
    s = e * pow(u1, -1, N384) % N384
    r = u2 * s % N384
    assert 0 < r < N384 and 0 < s < N384
    assert (e * pow(s, -1, N384)) % N384 | (r * pow(s, -1, N384)) % N384 == (1 << 384) - 1
    return _with_signature(bytes(forged), r, s)


def test_a_forgery_with_the_dearest_scalars_is_still_refused_under_the_cap(snp: Chain) -> None:
    """Attack: the node picks (r, s) so that verifying its forgery costs the most, hoping the
    dispute's check cannot finish within EIP-7825's cap (then no one can prove the forgery)."""
    client = snp.amd
    report, vcek = _real("milan_virtee_sev")
    client.run_report_call(prepare_report_call(report, vcek, is_cached=client.is_cert_verified))
    certs = [cert_hash(vcek), b""]
    genuine_gas = client.contract.functions.checkReport(report, certs).estimate_gas()
    forged = _worst_case_forgery(report)
    fn = client.contract.functions.checkReport(forged, certs)
    ok, reason, _ = fn.call({"gas": TX_GAS_CAP})
    assert (ok, SnpReason(reason)) == (False, SnpReason.BAD_SIGNATURE)
    worst = fn.estimate_gas()
    # Room for the dispute around it: four nested calls keep 1/64 each, plus its own work.
    assert worst * (64 / 63) ** 4 + 600_000 < TX_GAS_CAP, (snp.hardfork, worst, genuine_gas)
    assert client.is_signer_bound(forged, cert_hash(vcek))


def test_a_starved_check_never_calls_a_genuine_report_bad(snp: Chain) -> None:
    """Attack: a disputer (or a contract between it and the verifier) sends just too little gas,
    so that some inner step fails and the check might answer 'refused' for a genuine report.
    Swept over the whole range, cold (certificates as DER, not cached) and warm."""
    client = _client(snp.anvil, ark_certificates())  # nothing cached: the cold path
    report, vcek = _real("genoa_azure")
    whole = prepare_report_call(report, vcek, split=False)
    cold = client.contract.functions.checkReport(whole.report, whole.certs)
    cold_need = cold.estimate_gas()
    for path, fn, need in (("cold", cold, cold_need),):
        outcomes = _sweep(fn, need)
        assert outcomes["ok"] > 0 and outcomes["reverted"] > 0, (path, outcomes)
    # Warm: cache the certificates, then the report only.
    client.run_report_call(prepare_report_call(report, vcek, is_cached=client.is_cert_verified))
    warm = client.contract.functions.checkReport(report, [cert_hash(vcek), b""])
    outcomes = _sweep(warm, warm.estimate_gas())
    assert outcomes["ok"] > 0 and outcomes["reverted"] > 0, ("warm", outcomes)


def _sweep(fn: object, need: int) -> dict[str, int]:
    outcomes = {"ok": 0, "reverted": 0}
    steps = 24
    for i in range(1, steps + 1):
        gas = 60_000 + (need + 50_000 - 60_000) * i // steps
        try:
            ok, reason, _ = fn.call({"gas": gas})  # type: ignore[attr-defined]
        except Exception as exc:  # any failure but a refusal is fine
            assert "SnpVerifier_Refused" not in str(exc), (gas, exc)
            outcomes["reverted"] += 1
            continue
        assert (ok, reason) == (True, 0), (gas, ok, reason)
        outcomes["ok"] += 1
    return outcomes


def _variant(der_bytes: bytes) -> bytes:
    """The same certificate (same TBS, same signature) with its unsigned outer signature
    AlgorithmIdentifier re-encoded (PSS saltLength 48 -> 32): another keccak256, still valid."""
    outer_start = der_bytes.index(bytes.fromhex("a203020130"), 4 + 0x300)
    out = bytearray(der_bytes)
    out[outer_start + 4] = 0x20
    return bytes(out)


def test_an_issuer_twin_cannot_make_a_genuine_vcek_look_badly_chained(snp: Chain) -> None:
    """Attack: outer AlgorithmIdentifier bytes are not signed, so anyone can make a second DER
    (another cache key) of AMD's ASK. Caching the chip's VCEK against that twin first made the
    honest `verifyCertificate(vcek, keccak(ask))` revert CertChain: a genuine chain refused
    (e.g. front-running the step `cvm attestation verify --onchain` sends)."""
    client = _client(snp.anvil, ark_certificates())
    report, vcek = _real("milan_go_sev_guest")
    call = prepare_report_call(report, vcek)
    ask = call.issuer_der
    twin = _variant(ask)
    assert twin != ask
    ark = client.ark_key_hash(keccak(b"Milan"))
    client.verify_certificate(twin, ark)
    client.verify_certificate(ask, ark)
    client.verify_certificate(vcek, cert_hash(twin))  # the attacker's step
    # The honest step now still succeeds (same key, same subject: the same issuer).
    result = client.verify_certificate(vcek, cert_hash(ask))
    assert result.gas_used < 200_000
    assert client.call_check_report(report, [cert_hash(vcek), cert_hash(ask)]) == (
        True,
        SnpReason.OK,
    )
    # Another issuer (the ASVK: another key) is still refused.
    asvk = x509.load_pem_x509_certificates(
        (SNP_DATA / "ca" / "milan_vlek_cert_chain.pem").read_bytes()
    )[0]
    assert "VLEK" in asvk.subject.rfc4514_string()
    client.verify_certificate(der(asvk), ark)
    with pytest.raises(ContractRevert) as refused:
        client.verify_certificate(vcek, cert_hash(der(asvk)))
    assert refused.value.name == "SnpVerifier_Refused"
    assert list(refused.value.args_by_name.values()) == [int(SnpReason.CERT_CHAIN)]


# --- RSASSA-PSS: solarity's decoding is lax; only the key's holder can use it ---------------


def _raw_sign(key: rsa.RSAPrivateKey, em: bytes) -> bytes:
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    size = (n.bit_length() + 7) // 8
    m = int.from_bytes(em, "big")
    assert m < n
    return pow(m, numbers.d, n).to_bytes(size, "big")


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _lax_em(tbs: bytes, size: int, *, shift: int) -> bytes:
    """EMSA-PSS encoding with 48 bytes of salt, but the 0x01 separator `shift` bytes early and
    junk between it and the salt: RFC 8017 9.1.2 step 10 refuses it."""
    salt = bytes(range(48))
    m_hash = hashlib.sha384(tbs).digest()
    h = hashlib.sha384(b"\x00" * 8 + m_hash + salt).digest()
    db_len = size - 48 - 1
    ps = b"\x00" * (db_len - 48 - 1 - shift)
    db = ps + b"\x01" + b"\xaa" * shift + salt
    masked = bytes(a ^ b for a, b in zip(db, _mgf1(h, db_len), strict=True))
    masked = bytes([masked[0] & 0x7F]) + masked[1:]
    return masked + h + b"\xbc"


def test_pss_laxness_needs_the_issuers_private_key(tmp_path: Path) -> None:
    """solarity's RSASSAPSS finds the 0x01 separator anywhere (RFC 8017 fixes its position)
    and ignores EM's top bit. A signature only passes if H = SHA-384(0^8 || mHash || salt) for
    the salt the decoding reads, so producing one still needs an e-th root mod n (the issuer's
    private key): with AMD's keys no one else can. Shown with a simulated AMD whose key we
    hold: the contract takes the non-standard encoding, `cryptography` refuses it."""
    amd = SimulatedAmd(rsa_key_size=4096)
    chip = SimulatedSecureProcessor(Product.MILAN, amd=amd)
    ask_key = amd.signing_key()
    vcek = chip.vcek
    tbs = vcek.tbs_certificate_bytes
    size = 512
    lax = _raw_sign(ask_key, _lax_em(tbs, size, shift=5))
    # Rebuild the VCEK DER with that signature.
    original = der(vcek)
    assert original.endswith(vcek.signature)
    forged_der = original[: -len(vcek.signature)] + lax
    relaxed = x509.load_der_x509_certificate(forged_der)
    assert not verify_amd_signature(relaxed, amd.ask(Product.MILAN))
    with Anvil(hardfork="osaka", enforce_tx_gas_cap=True) as node:
        client = _client(node, [der(amd.ark(p)) for p in Product])
        report = chip.attest().report
        call = prepare_report_call(report, forged_der, chain=chip.chain_pem, split=False)
        ok, reason = client.call_check_report(call.report, call.certs)
    assert (ok, reason) == (True, SnpReason.OK)
