"""The EVM's SEV-SNP report check (SnpVerifier) against the off-chain verifier, on real anvils.

Real AMD reports from tests/data/snp verify on both gas schedules (Cancun and Osaka, whose
EIP-7883 reprices modexp) with every transaction under EIP-7825's cap, enforced by anvil;
the contract's fields equal `cvm.attestation`'s; every tampered report and certificate is
refused with the off-chain reason. A simulated AMD-SP (its own pinned ARKs) covers what no
real sample has: a VLEK, Turin, a TCB or CHIP_ID that disagrees with a validly signed report.
SHA-384 and the DER parse are fuzzed against hashlib and `cryptography`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from eth_utils import keccak

from cvm.attestation import abi
from cvm.attestation._der import IA5_STRING, decode, decode_integer, encode, encode_integer
from cvm.attestation.abi import GuestPolicy, SigningKey, TcbVersion
from cvm.attestation.endorsement import load_certificate
from cvm.attestation.errors import ReportFormatError, VerificationError
from cvm.attestation.onchain import (
    ONCHAIN_REASON,
    SnpReason,
    ark_certificates,
    cert_hash,
    der,
    expected_fields,
    prepare_report_call,
    rsa_key_hash,
)
from cvm.attestation.product import Product
from cvm.attestation.sim import SimulatedAmd, SimulatedSecureProcessor
from cvm.attestation.trust import amd_roots
from cvm.attestation.verify import AMD_PSS, verify_report
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
from tests.fixtures.chain import ChainSystem

pytestmark = pytest.mark.integration

SNP_DATA = Path(__file__).resolve().parents[1] / "data" / "snp"
REAL = {"milan_virtee_sev": "Milan", "milan_go_sev_guest": "Milan", "genoa_azure": "Genoa"}
AMD_OID = "1.3.6.1.4.1.3704.1"


def _client(anvil: Anvil, arks: list[bytes]) -> SnpVerifierClient:
    account = anvil.dev_account(9)
    address = deploy_snp_verifier(anvil.w3, account, arks)
    events = EventDecoder({"SnpVerifier": (address, load_artifact("SnpVerifier").abi)})
    sender = TransactionSender(anvil.w3, account, revert_decoder())
    return SnpVerifierClient(anvil.w3, address, events, sender)


@dataclass(frozen=True)
class SnpChain:
    hardfork: str
    anvil: Anvil
    amd: SnpVerifierClient  # pinned to AMD's ARKs


@pytest.fixture(scope="module", params=["cancun", "osaka"])
def snp(request: pytest.FixtureRequest) -> Iterator[SnpChain]:
    with Anvil(hardfork=request.param, enforce_tx_gas_cap=True) as node:
        yield SnpChain(request.param, node, _client(node, ark_certificates()))


def _real(name: str) -> tuple[bytes, bytes]:
    report = (SNP_DATA / "reports" / f"{name}.bin").read_bytes()
    vcek = (SNP_DATA / "vcek" / f"{name}.der").read_bytes()
    return report, vcek


def _offchain(report: bytes, vcek: bytes, **kwargs: object) -> SnpReason:
    try:
        verify_report(report, vcek, check_cert_validity=False, **kwargs)  # type: ignore[arg-type]
    except (VerificationError, ReportFormatError) as exc:
        return ONCHAIN_REASON[exc.reason]
    return SnpReason.OK


# --- real AMD material -------------------------------------------------------------------


def test_real_reports_verify_cold_then_warm_with_every_transaction_under_the_cap(
    snp: SnpChain,
) -> None:
    client = snp.amd
    for name, product in REAL.items():
        report, vcek = _real(name)
        verified = verify_report(report, vcek, check_cert_validity=False)
        call = prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
        verdict = client.run_report_call(call)
        assert verdict.ok, (name, verdict.reason)
        assert verdict.fields is not None
        assert verdict.fields.as_tuple() == expected_fields(report, product, 0)
        assert verdict.fields.measurement == verified.report.measurement
        assert verdict.fields.policy == verified.report.policy.raw
        assert all(step.gas_used < TX_GAS_CAP for step in verdict.steps), verdict.steps
        assert client.is_cert_verified(cert_hash(vcek))
        # Warm: the chip is known, the dispute is one transaction.
        warm = client.check(report, vcek)
        assert warm.ok and [s.function for s in warm.steps] == ["verifyReport"]
        assert warm.steps[0].gas_used < TX_GAS_CAP
        assert client.call_check_report(report, call.certs) == (True, SnpReason.OK)
        assert client.is_signer_bound(report, cert_hash(vcek))


def test_the_first_report_of_a_product_takes_three_transactions(snp: SnpChain) -> None:
    client = _client(snp.anvil, ark_certificates())  # nothing cached
    report, vcek = _real("genoa_azure")
    call = prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
    assert [s.function for s in call.steps] == [
        "verifyCertificate",
        "verifyCertificate",
        "verifyReport",
    ]
    verdict = client.run_report_call(call)
    assert verdict.ok
    assert len(verdict.steps) == 3
    assert max(step.gas_used for step in verdict.steps) < TX_GAS_CAP


def test_every_tampered_report_and_certificate_is_refused_with_the_offchain_reason(
    snp: SnpChain,
) -> None:
    client = snp.amd
    report, vcek = _real("milan_virtee_sev")
    negatives = sorted((SNP_DATA / "negative").iterdir())
    assert len(negatives) == 7
    for path in negatives:
        data = path.read_bytes()
        bad_report, bad_vcek = (data, vcek) if path.suffix == ".bin" else (report, data)
        expected = _offchain(bad_report, bad_vcek)
        assert expected is not SnpReason.OK, path.name
        call = prepare_report_call(bad_report, bad_vcek, is_cached=client.is_cert_verified)
        verdict = client.run_report_call(call)
        assert (verdict.ok, verdict.reason) == (False, expected), path.name
        # In one call (certificates as DER), checkReport gives the same reason.
        whole = prepare_report_call(bad_report, bad_vcek, split=False)
        assert client.call_check_report(whole.report, whole.certs) == (False, expected)
        assert not client.is_cert_verified(cert_hash(bad_vcek)) or bad_vcek == vcek


def test_a_report_with_another_chips_vcek_is_refused(snp: SnpChain) -> None:
    report, _ = _real("milan_go_sev_guest")
    _, other = _real("milan_virtee_sev")
    expected = _offchain(report, other)
    call = prepare_report_call(report, other, is_cached=snp.amd.is_cert_verified)
    verdict = snp.amd.run_report_call(call)
    assert (verdict.ok, verdict.reason) == (False, expected) == (False, SnpReason.BAD_SIGNATURE)


def test_a_starved_check_reverts_rather_than_calling_a_good_report_bad(snp: SnpChain) -> None:
    client = snp.amd
    report, vcek = _real("milan_virtee_sev")
    call = prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
    fn = client.contract.functions.checkReport(call.report, call.certs)
    ok, reason, _ = fn.call({"gas": 15_000_000})
    assert (ok, reason) == (True, 0)
    # With too little gas the inner check runs out; checkReport must not answer "refused".
    with pytest.raises(Exception) as failure:
        fn.call({"gas": 600_000})
    assert "SnpVerifier_Refused" not in str(failure.value)


# --- simulated AMD-SP: VLEK, Turin, fields that disagree with a valid signature -----------


@pytest.fixture(scope="module")
def sim_amd() -> SimulatedAmd:
    return SimulatedAmd(rsa_key_size=4096)


@pytest.fixture(scope="module")
def sim(sim_amd: SimulatedAmd) -> Iterator[SnpVerifierClient]:
    arks = [der(sim_amd.ark(p)) for p in Product]
    with Anvil(hardfork="osaka", enforce_tx_gas_cap=True) as node:
        # The simulated roots beside AMD's, as a local stack would pin them.
        yield _client(node, [*ark_certificates(), *arks])


def _sim_verdict(
    client: SnpVerifierClient, amd: SimulatedAmd, report: bytes, chip: SimulatedSecureProcessor
) -> tuple[SnpReason, SnpReason]:
    offchain = _offchain(
        report, chip.vcek_der, chain=chip.chain_pem, trusted_roots=[amd.ark(chip.product)]
    )
    call = prepare_report_call(report, chip.vcek_der, chain=chip.chain_pem, split=False)
    ok, onchain = client.call_check_report(call.report, call.certs)
    assert ok == (onchain is SnpReason.OK)
    return offchain, onchain


@pytest.mark.parametrize(
    ("product", "signer"),
    [
        (Product.MILAN, SigningKey.VCEK),
        (Product.GENOA, SigningKey.VLEK),
        (Product.TURIN, SigningKey.VCEK),
        (Product.TURIN, SigningKey.VLEK),
    ],
)
def test_simulated_reports_verify_like_offchain(
    sim: SnpVerifierClient, sim_amd: SimulatedAmd, product: Product, signer: SigningKey
) -> None:
    chip = SimulatedSecureProcessor(product, amd=sim_amd, signer=signer)
    evidence = chip.attest(measurement=bytes(range(48)), report_data=b"\x11" * 64)
    assert _sim_verdict(sim, sim_amd, evidence.report, chip) == (SnpReason.OK, SnpReason.OK)
    roots = [sim_amd.ark(product)]
    call = prepare_report_call(evidence.report, chip.vcek_der, chain=chip.chain_pem, roots=roots)
    verdict = sim.run_report_call(call)
    assert verdict.ok and verdict.fields is not None
    expected = expected_fields(evidence.report, product.value, int(signer))
    assert verdict.fields.as_tuple() == expected
    assert all(step.gas_used < TX_GAS_CAP for step in verdict.steps)


def test_simulated_mismatches_are_refused_like_offchain(
    sim: SnpVerifierClient, sim_amd: SimulatedAmd
) -> None:
    chip = SimulatedSecureProcessor(Product.MILAN, amd=sim_amd)
    good = abi.parse(chip.attest().report)
    # Each variant is validly signed by the chip's VCEK: only the binding checks catch it.
    other_chip = bytes([good.chip_id[0] ^ 1]) + good.chip_id[1:]
    as_vlek = replace(good.signer_info, signing_key=SigningKey.VLEK)
    masked_key = replace(good.signer_info, mask_chip_key=True)
    variants = {
        SnpReason.TCB_MISMATCH: replace(good, reported_tcb=good.reported_tcb ^ 0x01),
        SnpReason.CHIP_ID_MISMATCH: replace(good, chip_id=other_chip),
        SnpReason.PRODUCT_MISMATCH: replace(good, cpuid_mod_id=0x11),  # Genoa's model
        SnpReason.SIGNER_MISMATCH: replace(good, signer_info=as_vlek),
        SnpReason.UNSIGNED_REPORT: replace(good, signer_info=masked_key),
    }
    for reason, report in variants.items():
        signed = chip.sign_report(report)
        assert _sim_verdict(sim, sim_amd, signed, chip) == (reason, reason), reason
    # POLICY: bits up to 25 are defined (e.g. 24 CIPHERTEXT_HIDING), 26 and up are reserved.
    for bit in (24, 25):
        signed = chip.sign_report(replace(good, policy=GuestPolicy(good.policy.raw | 1 << bit)))
        assert _sim_verdict(sim, sim_amd, signed, chip) == (SnpReason.OK, SnpReason.OK), bit
    reserved = bytearray(chip.sign_report(good))
    reserved[0x08 + 3] |= 0x04  # POLICY bit 26 (the layout check comes before the signature)
    malformed = (SnpReason.MALFORMED, SnpReason.MALFORMED)
    assert _sim_verdict(sim, sim_amd, bytes(reserved), chip) == malformed
    # MASK_CHIP_ID zeroes CHIP_ID: still verifies (the signature binds the chip).
    masked = chip.attest(mask_chip_id=True).report
    assert _sim_verdict(sim, sim_amd, masked, chip) == (SnpReason.OK, SnpReason.OK)
    # Turin: CHIP_ID is the 8-byte hwID, the rest must be zero.
    turin = SimulatedSecureProcessor(Product.TURIN, amd=sim_amd)
    t = abi.parse(turin.attest().report)
    padded = turin.sign_report(replace(t, chip_id=t.chip_id[:8] + b"\x01" + bytes(55)))
    assert _sim_verdict(sim, sim_amd, padded, turin) == (
        SnpReason.CHIP_ID_MISMATCH,
        SnpReason.CHIP_ID_MISMATCH,
    )


def test_a_simulated_chain_is_refused_by_the_amd_pinned_verifier(
    snp: SnpChain, sim_amd: SimulatedAmd
) -> None:
    chip = SimulatedSecureProcessor(Product.GENOA, amd=sim_amd)
    evidence = chip.attest()
    call = prepare_report_call(evidence.report, chip.vcek_der, chain=chip.chain_pem, split=False)
    assert snp.amd.call_check_report(call.report, call.certs) == (False, SnpReason.CERT_CHAIN)
    split = prepare_report_call(evidence.report, chip.vcek_der, chain=chip.chain_pem)
    assert split.ark_key_hash == bytes(32)
    verdict = snp.amd.run_report_call(split)
    assert (verdict.ok, verdict.reason) == (False, SnpReason.CERT_CHAIN)


def test_deploy_puts_a_snp_verifier_pinned_to_amd_into_every_system(chain: ChainSystem) -> None:
    client = chain.client()
    assert client.snp is not None
    assert chain.deployment.contracts()["SnpVerifier"] == chain.deployment.snp_verifier
    for root in amd_roots():
        product = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(product, str)
        key = keccak(product.removeprefix("ARK-").encode())
        assert client.snp.ark_key_hash(key) == rsa_key_hash(root)
    assert client.snp.ark_key_hash(keccak(b"Naples")) == bytes(32)


# --- fuzz: SHA-384 and DER against Python -------------------------------------------------


def test_sha384_matches_hashlib_on_random_inputs(chain: ChainSystem) -> None:
    client = chain.client().snp
    assert client is not None
    rng = random.Random(0x384)
    boundaries = [0, 1, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 672, 1184]
    lengths = boundaries + [rng.randrange(0, 2048) for _ in range(60)]
    for n in lengths:
        data = rng.randbytes(n)
        assert client.sha384(data) == hashlib.sha384(data).digest(), n


def _cn(name: x509.Name) -> bytes:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return b""
    value = values[0].value
    return value.encode() if isinstance(value, str) else bytes(value)


def _assert_parse_matches(client: SnpVerifierClient, data: bytes) -> None:
    cert = load_certificate(data)
    parsed = client.parse_certificate(data)
    (tbs_start, tbs_end, issuer_h, subject_h, issuer_cn, subject_cn, key_type, n, e, point) = (
        parsed[:10]
    )
    (pss384, signature, amd_bits, spl, product_name, hwid) = parsed[10:]
    assert data[tbs_start:tbs_end] == cert.tbs_certificate_bytes
    assert issuer_h == keccak(cert.issuer.public_bytes())
    assert subject_h == keccak(cert.subject.public_bytes())
    assert (issuer_cn, subject_cn) == (_cn(cert.issuer), _cn(cert.subject))
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        assert key_type == 1
        assert int.from_bytes(n, "big") == numbers.n and n[0] != 0
        assert int.from_bytes(e, "big") == numbers.e
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        numbers_ec = key.public_numbers()
        assert key_type == 2
        assert point == numbers_ec.x.to_bytes(48, "big") + numbers_ec.y.to_bytes(48, "big")
    else:
        assert key_type == 0
    is_pss384 = cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS and isinstance(
        cert.signature_hash_algorithm, hashes.SHA384
    )
    assert pss384 == is_pss384
    assert signature == cert.signature
    expected_bits = 0
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if not oid.startswith(AMD_OID + ".") or not isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            continue
        arcs = oid[len(AMD_OID) + 1 :].split(".")
        raw = ext.value.value
        if arcs[0] == "3" and len(arcs) == 2 and 1 <= int(arcs[1]) <= 9:
            expected_bits |= 1 << int(arcs[1])
            assert spl[int(arcs[1])] == decode_integer(raw)
        elif arcs == ["2"]:
            expected_bits |= 1 << 10
            assert product_name == decode(IA5_STRING, raw)
        elif arcs == ["4"]:
            expected_bits |= 1 << 11
            assert hwid == raw
        elif arcs == ["1"]:
            expected_bits |= 1 << 12
        elif arcs == ["5"]:
            expected_bits |= 1 << 13
    assert amd_bits == expected_bits


def _random_name(rng: random.Random, cn: str | None) -> x509.Name:
    attrs = []
    kinds = [
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.LOCALITY_NAME,
    ]
    for oid in rng.sample(kinds, rng.randrange(0, 4)):
        value = (
            "US"
            if oid == NameOID.COUNTRY_NAME
            else "".join(rng.choice("abcdefghij KLMN-é") for _ in range(rng.randrange(1, 40)))
        )
        attrs.append(x509.NameAttribute(oid, value))
    if cn is not None:
        attrs.insert(rng.randrange(0, len(attrs) + 1), x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _random_certificate(rng: random.Random, keys: dict[str, object]) -> bytes:
    kind = rng.choice(["rsa", "p384", "p256"])
    subject_key = keys[kind]
    issuer_kind = rng.choice(["rsa", "p384"])
    issuer_key = keys[issuer_kind]
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 3000))
    subjects = ["SEV-VCEK", "SEV-VLEK", "ARK-Milan", "x" * rng.randrange(1, 65), None]
    issuers = ["SEV-Milan", "SEV-VLEK-Turin", "ARK-Genoa", None]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_random_name(rng, rng.choice(subjects)))
        .issuer_name(_random_name(rng, rng.choice(issuers)))
        .public_key(subject_key.public_key())  # type: ignore[attr-defined]
        .serial_number(rng.choice([0, 1, rng.getrandbits(150)]) or 1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=rng.randrange(1, 20000)))
    )  # fmt: skip
    for arc in rng.sample(
        ["1", "2", "3.1", "3.2", "3.3", "3.4", "3.8", "3.9", "4", "5"], rng.randrange(0, 10)
    ):
        oid = x509.ObjectIdentifier(f"{AMD_OID}.{arc}")
        if arc.startswith("3."):
            value = encode_integer(rng.randrange(0, 256))
        elif arc in ("2", "5"):
            value = encode(
                IA5_STRING,
                rng.choice([b"Milan-B0", b"Genoa", b"Turin", b"x" * rng.randrange(0, 130)]),
            )
        elif arc == "4":
            value = rng.randbytes(rng.choice([8, 64, 200]))
        else:
            value = encode_integer(rng.randrange(0, 3))
        builder = builder.add_extension(
            x509.UnrecognizedExtension(oid, value), critical=rng.random() < 0.2
        )
    if rng.random() < 0.5:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if issuer_kind == "rsa":
        pad = rng.choice(
            [AMD_PSS, padding.PKCS1v15(), padding.PSS(padding.MGF1(hashes.SHA256()), 32)]
        )
        digest = (
            hashes.SHA384() if pad is AMD_PSS else rng.choice([hashes.SHA256(), hashes.SHA384()])
        )
        cert = builder.sign(issuer_key, digest, rsa_padding=pad)  # type: ignore[arg-type]
    else:
        cert = builder.sign(issuer_key, rng.choice([hashes.SHA256(), hashes.SHA384()]))  # type: ignore[arg-type]
    return cert.public_bytes(Encoding.DER)


def test_der_parse_matches_cryptography_on_real_and_generated_certificates(
    chain: ChainSystem,
) -> None:
    client = chain.client().snp
    assert client is not None
    real = [p.read_bytes() for p in (SNP_DATA / "vcek").iterdir()]
    real += [p.read_bytes() for p in (SNP_DATA / "negative").glob("*.der")]
    for pem in (SNP_DATA / "ca").glob("*.pem"):
        real += [der(c) for c in x509.load_pem_x509_certificates(pem.read_bytes())]
    for data in real:
        _assert_parse_matches(client, data)
    rng = random.Random(0xDE5)
    keys = {
        "rsa": rsa.generate_private_key(65537, 2048),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p256": ec.generate_private_key(ec.SECP256R1()),
    }
    for _ in range(60):
        _assert_parse_matches(client, _random_certificate(rng, keys))


def test_der_parse_of_mutated_certificates_agrees_with_cryptography_whenever_both_parse(
    chain: ChainSystem,
) -> None:
    client = chain.client().snp
    assert client is not None
    rng = random.Random(0xF022)
    sources = [p.read_bytes() for p in (SNP_DATA / "vcek").iterdir()]
    both = refused = 0
    for _ in range(150):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randrange(1, 4)):
            op = rng.random()
            i = rng.randrange(len(data))
            if op < 0.6:
                data[i] ^= 1 << rng.randrange(8)
            elif op < 0.8:
                del data[i : i + rng.randrange(1, 4)]
            else:
                data[i:i] = rng.randbytes(rng.randrange(1, 4))
        mutated = bytes(data)
        try:
            client.parse_certificate(mutated)
        except ContractRevert as exc:
            assert exc.name == "Der_Malformed", exc.name
            refused += 1
            continue
        try:
            cert = load_certificate(mutated)
            (
                cert.public_key(),
                cert.extensions,
                cert.issuer,
                cert.subject,
                cert.signature_hash_algorithm,
            )
        except (VerificationError, ValueError, UnsupportedAlgorithm):
            continue  # the contract reads less than cryptography (e.g. not the validity)
        _assert_parse_matches(client, mutated)
        both += 1
    assert refused > 0 and both > 0, (refused, both)


def test_the_turin_tcb_layout_matches_the_offchain_one(
    sim: SnpVerifierClient, sim_amd: SimulatedAmd
) -> None:
    tcb = TcbVersion(fmc=3, bl=5, tee=7, snp=9, ucode=200)
    chip = SimulatedSecureProcessor(Product.TURIN, amd=sim_amd, tcb=tcb)
    report = chip.attest().report
    call = prepare_report_call(report, chip.vcek_der, chain=chip.chain_pem, split=False)
    fields = sim.call_verify_report(call.report, call.certs)
    assert fields.reported_tcb == tcb.to_int(Product.TURIN)


def test_p384_matches_cryptography_on_random_keys_and_signatures(chain: ChainSystem) -> None:
    client = chain.client().snp
    assert client is not None
    verifier = chain.anvil.w3.eth.contract(
        address=client.contract.functions.P384_VERIFIER().call(),
        abi=load_artifact("P384Verifier").abi,
    )
    rng = random.Random(0x384384)
    n = int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
        16,
    )
    cases = 0
    for _ in range(12):
        key = ec.generate_private_key(ec.SECP384R1())
        pub = key.public_key().public_numbers()
        point = pub.x.to_bytes(48, "big") + pub.y.to_bytes(48, "big")
        message = rng.randbytes(rng.randrange(0, 300))
        digest = hashlib.sha384(message).digest()
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA384())))
        variants = [
            (r, s, digest, True),
            (r, n - s, digest, True),  # the high/low twin verifies too
            (r, s, bytes([digest[0] ^ 1]) + digest[1:], False),
            ((r + 1) % n or 1, s, digest, False),
            (r, (s * 2) % n or 1, digest, False),
        ]
        for vr, vs, vd, expected in variants:
            got = verifier.functions.verify(
                vd, vr.to_bytes(48, "big"), vs.to_bytes(48, "big"), point
            ).call()
            assert got is expected, (vr, vs)
            cases += 1
    # Out of range scalars and a point off the curve are refused, not reverted.
    assert not verifier.functions.verify(digest, bytes(48), s.to_bytes(48, "big"), point).call()
    assert not verifier.functions.verify(
        digest, n.to_bytes(48, "big"), s.to_bytes(48, "big"), point
    ).call()
    off_curve = point[:95] + bytes([point[95] ^ 1])
    assert not verifier.functions.verify(
        digest, r.to_bytes(48, "big"), s.to_bytes(48, "big"), off_curve
    ).call()
    assert cases == 60


def test_mutated_reports_get_the_offchain_verdict(snp: SnpChain) -> None:
    client = snp.amd
    rng = random.Random(0xB17)
    for name in REAL:
        report, vcek = _real(name)
        call = prepare_report_call(report, vcek, is_cached=client.is_cert_verified)
        client.run_report_call(call)  # certificates cached: each check below is one call
        # Bytes of every region: header, policy, signer info, reserved, CPUID, signature.
        offsets = [0x00, 0x08, 0x0A, 0x48, 0x4C, 0x188, 0x18C, 0x1EB, 0x208, 0x2A0, 0x2D0, 0x400]
        for offset in offsets + [rng.randrange(0, abi.REPORT_SIZE) for _ in range(4)]:
            mutated = bytearray(report)
            mutated[offset] ^= 1 << rng.randrange(8)
            expected = _offchain(bytes(mutated), vcek)
            got = client.call_check_report(bytes(mutated), call.certs)
            assert got == (expected is SnpReason.OK, expected), (name, hex(offset))
