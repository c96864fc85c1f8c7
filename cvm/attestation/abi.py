"""The SEV-SNP ATTESTATION_REPORT (AMD pub. 56860, table "ATTESTATION_REPORT structure").

Bytes to structure and back, nothing else: no signatures, no certificates. `parse` accepts
report versions 2 to 5 and rejects anything the specification forbids (wrong size, unknown
version or signature algorithm, reserved bits or bytes that must be zero) with a single
error type, `ReportFormatError`. `Report.to_bytes` is its exact inverse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

from cvm.attestation.errors import ReportFormatError
from cvm.attestation.product import Product

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers bytes 0x000-0x29F
SIGNATURE_OFFSET = 0x2A0
ECDSA_COMPONENT_SIZE = 72  # R and S, little-endian, zero-padded
MIN_VERSION = 2
MAX_VERSION = 5
SIG_ALGO_ECDSA_P384_SHA384 = 1

# POLICY bits (56860 "Guest policy structure").
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_CXL_ALLOW = 1 << 21
POLICY_MEM_AES_256_XTS = 1 << 22
POLICY_RAPL_DIS = 1 << 23
POLICY_CIPHERTEXT_HIDING = 1 << 24
POLICY_PAGE_SWAP_DISABLE = 1 << 25
_POLICY_MAX_BIT = 25

# One unpack for the whole signed body keeps parsing cheap next to the ECDSA check.
_LAYOUT = struct.Struct(
    "<"
    "I"  # 0x000 VERSION
    "I"  # 0x004 GUEST_SVN
    "Q"  # 0x008 POLICY
    "16s"  # 0x010 FAMILY_ID
    "16s"  # 0x020 IMAGE_ID
    "I"  # 0x030 VMPL
    "I"  # 0x034 SIGNATURE_ALGO
    "Q"  # 0x038 CURRENT_TCB
    "Q"  # 0x040 PLATFORM_INFO
    "I"  # 0x048 signer info (AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY)
    "4s"  # 0x04C reserved, must be zero
    "64s"  # 0x050 REPORT_DATA
    "48s"  # 0x090 MEASUREMENT
    "32s"  # 0x0C0 HOST_DATA
    "48s"  # 0x0E0 ID_KEY_DIGEST
    "48s"  # 0x110 AUTHOR_KEY_DIGEST
    "32s"  # 0x140 REPORT_ID
    "32s"  # 0x160 REPORT_ID_MA
    "Q"  # 0x180 REPORTED_TCB
    "3s"  # 0x188 CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (v3+; zero before)
    "21s"  # 0x18B reserved, must be zero
    "64s"  # 0x1A0 CHIP_ID
    "Q"  # 0x1E0 COMMITTED_TCB
    "3s"  # 0x1E8 CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR
    "1s"  # 0x1EB reserved
    "3s"  # 0x1EC COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR
    "1s"  # 0x1EF reserved
    "Q"  # 0x1F0 LAUNCH_TCB
    "Q"  # 0x1F8 LAUNCH_MIT_VECTOR (v5; reserved before)
    "Q"  # 0x200 CURRENT_MIT_VECTOR (v5; reserved before)
    "152s"  # 0x208 reserved up to the signature
    "72s"  # 0x2A0 SIGNATURE.R
    "72s"  # 0x2E8 SIGNATURE.S
    "368s"  # 0x330 rest of the 512-byte signature field, zero for ECDSA P-384
)
assert _LAYOUT.size == REPORT_SIZE


class SigningKey(IntEnum):
    """SIGNING_KEY (signer info bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY: the launch-time rules the AMD-SP enforces for the guest's lifetime."""

    raw: int

    @classmethod
    def from_int(cls, value: int) -> GuestPolicy:
        if not value & POLICY_RESERVED_ONE:
            raise ReportFormatError(f"POLICY bit 17 is reserved and must be 1 (POLICY={value:#x})")
        if value >> (_POLICY_MAX_BIT + 1):
            raise ReportFormatError(
                f"POLICY bits 63:{_POLICY_MAX_BIT + 1} are reserved and must be 0 "
                f"(POLICY={value:#x})"
            )
        return cls(value)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def smt(self) -> bool:
        return bool(self.raw & POLICY_SMT)

    @property
    def migrate_ma(self) -> bool:
        return bool(self.raw & POLICY_MIGRATE_MA)

    @property
    def debug(self) -> bool:
        return bool(self.raw & POLICY_DEBUG)

    @property
    def single_socket(self) -> bool:
        return bool(self.raw & POLICY_SINGLE_SOCKET)

    @property
    def cxl_allow(self) -> bool:
        return bool(self.raw & POLICY_CXL_ALLOW)

    @property
    def mem_aes_256_xts(self) -> bool:
        return bool(self.raw & POLICY_MEM_AES_256_XTS)

    @property
    def rapl_dis(self) -> bool:
        return bool(self.raw & POLICY_RAPL_DIS)

    @property
    def ciphertext_hiding(self) -> bool:
        return bool(self.raw & POLICY_CIPHERTEXT_HIDING)

    @property
    def page_swap_disable(self) -> bool:
        return bool(self.raw & POLICY_PAGE_SWAP_DISABLE)

    def as_dict(self) -> dict[str, int | bool | str]:
        return {
            "raw": f"{self.raw:#x}",
            "abi_major": self.abi_major,
            "abi_minor": self.abi_minor,
            "smt": self.smt,
            "migrate_ma": self.migrate_ma,
            "debug": self.debug,
            "single_socket": self.single_socket,
            "cxl_allow": self.cxl_allow,
            "mem_aes_256_xts": self.mem_aes_256_xts,
            "rapl_dis": self.rapl_dis,
            "ciphertext_hiding": self.ciphertext_hiding,
            "page_swap_disable": self.page_swap_disable,
        }


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """Report bytes 0x48-0x4B: who signed the report and whether CHIP_ID is masked."""

    signing_key: SigningKey = SigningKey.VCEK
    mask_chip_key: bool = False
    author_key_en: bool = False

    @classmethod
    def from_int(cls, value: int) -> SignerInfo:
        return _signer_info(value)

    @classmethod
    def _decode(cls, value: int) -> SignerInfo:
        if value >> 5:
            raise ReportFormatError(f"signer info bits 31:5 must be 0 (got {value:#x})")
        key = (value >> 2) & 0x7
        if key not in SigningKey._value2member_map_:
            raise ReportFormatError(f"SIGNING_KEY {key} is reserved (0 VCEK, 1 VLEK, 7 none)")
        return cls(SigningKey(key), bool(value & 0x2), bool(value & 0x1))

    def to_int(self) -> int:
        return (self.signing_key << 2) | (int(self.mask_chip_key) << 1) | int(self.author_key_en)


@lru_cache(maxsize=64)
def _signer_info(value: int) -> SignerInfo:
    # 32 valid values at most: decode each once (parsing sits on the verifier's hot path).
    return SignerInfo._decode(value)


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """Security patch levels of the firmware components, as packed in a TCB_VERSION."""

    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None = None  # Turin and later only

    @classmethod
    def from_int(cls, value: int, product: Product) -> TcbVersion:
        """Decode a TCB_VERSION; the byte layout depends on the product line."""
        b = value.to_bytes(8, "little")
        if product.has_fmc:
            return cls(fmc=b[0], bl=b[1], tee=b[2], snp=b[3], ucode=b[7])
        return cls(bl=b[0], tee=b[1], snp=b[6], ucode=b[7])

    def to_int(self, product: Product) -> int:
        """Encode for `product`; reserved bytes are zero."""
        for name in ("bl", "tee", "snp", "ucode", "fmc"):
            component = getattr(self, name)
            if component is not None and not 0 <= component <= 0xFF:
                raise ValueError(f"TCB component {name}={component} does not fit in a byte")
        b = bytearray(8)
        if product.has_fmc:
            b[0], b[1], b[2], b[3], b[7] = self.fmc or 0, self.bl, self.tee, self.snp, self.ucode
        else:
            if self.fmc:
                raise ValueError(f"{product} has no FMC component in its TCB")
            b[0], b[1], b[6], b[7] = self.bl, self.tee, self.snp, self.ucode
        return int.from_bytes(b, "little")

    def components(self) -> dict[str, int]:
        named = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if self.fmc is not None:
            named = {"fmc": self.fmc, **named}
        return named

    def at_least(self, minimum: TcbVersion) -> list[str]:
        """Names of the components below `minimum` (empty when every one is high enough)."""
        low = [n for n, v in minimum.components().items() if v > self.components().get(n, 0)]
        return low


def _zero(n: int) -> bytes:
    return bytes(n)


@dataclass(slots=True)
class Report:
    """A parsed ATTESTATION_REPORT. Integers are as in the ABI; byte fields keep their size.

    Not frozen only because a frozen dataclass's __init__ costs more than the rest of parsing
    and parsing sits on the verifier's hot path: treat it as a value, derive changed copies
    with `dataclasses.replace`.
    """

    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: SignerInfo
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    chip_id: bytes
    committed_tcb: int
    launch_tcb: int
    cpuid_fam_id: int = 0
    cpuid_mod_id: int = 0
    cpuid_step: int = 0
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    signature_r: bytes = field(default=_zero(ECDSA_COMPONENT_SIZE))
    signature_s: bytes = field(default=_zero(ECDSA_COMPONENT_SIZE))

    @property
    def signing_key(self) -> SigningKey:
        return self.signer_info.signing_key

    @property
    def cpuid_product(self) -> Product | None:
        """Product line from the CPUID fields (version 3 and later only)."""
        if self.version < 3:
            return None
        return Product.from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def signature_ints(self) -> tuple[int, int]:
        """The ECDSA (r, s) pair; the ABI stores each little-endian in 72 bytes."""
        return int.from_bytes(self.signature_r, "little"), int.from_bytes(
            self.signature_s, "little"
        )

    def to_bytes(self) -> bytes:
        """Serialize to the 1184-byte ABI form (the exact inverse of `parse`)."""
        sizes = {
            "family_id": 16,
            "image_id": 16,
            "report_data": 64,
            "measurement": 48,
            "host_data": 32,
            "id_key_digest": 48,
            "author_key_digest": 48,
            "report_id": 32,
            "report_id_ma": 32,
            "chip_id": 64,
            "signature_r": ECDSA_COMPONENT_SIZE,
            "signature_s": ECDSA_COMPONENT_SIZE,
        }
        for name, size in sizes.items():
            if len(getattr(self, name)) != size:
                raise ReportFormatError(f"{name} must be {size} bytes")
        try:
            data = _LAYOUT.pack(
                self.version,
                self.guest_svn,
                self.policy.raw,
                self.family_id,
                self.image_id,
                self.vmpl,
                self.signature_algo,
                self.current_tcb,
                self.platform_info,
                self.signer_info.to_int(),
                _zero(4),
                self.report_data,
                self.measurement,
                self.host_data,
                self.id_key_digest,
                self.author_key_digest,
                self.report_id,
                self.report_id_ma,
                self.reported_tcb,
                bytes((self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step)),
                _zero(21),
                self.chip_id,
                self.committed_tcb,
                bytes((self.current_build, self.current_minor, self.current_major)),
                _zero(1),
                bytes((self.committed_build, self.committed_minor, self.committed_major)),
                _zero(1),
                self.launch_tcb,
                self.launch_mit_vector,
                self.current_mit_vector,
                _zero(152),
                self.signature_r,
                self.signature_s,
                _zero(368),
            )
        except (struct.error, ValueError, OverflowError) as exc:
            raise ReportFormatError(f"report field out of range: {exc}") from exc
        # Re-parse so that to_bytes never emits what parse would refuse.
        parse(data)
        return data


def _require_zero(value: bytes, what: str) -> None:
    if value.count(0) != len(value):  # C-speed, unlike any() over the bytes
        raise ReportFormatError(f"{what} is reserved and must be zero (found {value.hex()})")


def parse(data: bytes) -> Report:
    """Parse a raw 1184-byte report; raise `ReportFormatError` for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ReportFormatError(f"a report is bytes, not {type(data).__name__}")
    if len(data) != REPORT_SIZE:
        raise ReportFormatError(f"a report is {REPORT_SIZE} bytes, got {len(data)}")
    (
        version,
        guest_svn,
        policy,
        family_id,
        image_id,
        vmpl,
        signature_algo,
        current_tcb,
        platform_info,
        signer_info,
        reserved_4c,
        report_data,
        measurement,
        host_data,
        id_key_digest,
        author_key_digest,
        report_id,
        report_id_ma,
        reported_tcb,
        cpuid,
        reserved_18b,
        chip_id,
        committed_tcb,
        current_ver,
        reserved_1eb,
        committed_ver,
        reserved_1ef,
        launch_tcb,
        launch_mit_vector,
        current_mit_vector,
        reserved_208,
        signature_r,
        signature_s,
        signature_rest,
    ) = _LAYOUT.unpack(data)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ReportFormatError(
            f"report VERSION {version} is not supported ({MIN_VERSION} to {MAX_VERSION})"
        )
    signer = SignerInfo.from_int(signer_info)
    # An unsigned report (SIGNING_KEY none) may carry algorithm 0; a signed one must be ECDSA.
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 and not (
        signer.signing_key is SigningKey.NONE and signature_algo == 0
    ):
        raise ReportFormatError(
            f"SIGNATURE_ALGO {signature_algo} is unknown (1 = ECDSA P-384 with SHA-384)"
        )
    reserved = reserved_4c + reserved_18b + reserved_1eb + reserved_1ef + reserved_208
    if reserved.count(0) != len(reserved) or signature_rest.count(0) != len(signature_rest):
        # Slow path only for bad input: name the offending range.
        _require_zero(reserved_4c, "bytes 0x4C-0x4F")
        _require_zero(reserved_18b, "bytes 0x18B-0x19F")
        _require_zero(reserved_1eb, "byte 0x1EB")
        _require_zero(reserved_1ef, "byte 0x1EF")
        _require_zero(reserved_208, "bytes 0x208-0x29F")
        _require_zero(signature_rest, "signature bytes 0x330-0x49F")
    # R and S are 48-byte P-384 integers zero-extended to 72 bytes (little-endian).
    if signature_r[48:].count(0) != 24 or signature_s[48:].count(0) != 24:
        raise ReportFormatError("signature R and S must be zero-extended past byte 48")
    if version < 3:
        _require_zero(cpuid, "bytes 0x188-0x18A (CPUID fields, version 3 and later)")
    if version < 5 and (launch_mit_vector or current_mit_vector):
        raise ReportFormatError(
            "bytes 0x1F8-0x207 are reserved before version 5 (mitigation vectors) and must be zero"
        )
    return Report(
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy.from_int(policy),
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        signer_info=signer,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=reported_tcb,
        chip_id=chip_id,
        committed_tcb=committed_tcb,
        launch_tcb=launch_tcb,
        cpuid_fam_id=cpuid[0],
        cpuid_mod_id=cpuid[1],
        cpuid_step=cpuid[2],
        current_build=current_ver[0],
        current_minor=current_ver[1],
        current_major=current_ver[2],
        committed_build=committed_ver[0],
        committed_minor=committed_ver[1],
        committed_major=committed_ver[2],
        launch_mit_vector=launch_mit_vector,
        current_mit_vector=current_mit_vector,
        signature_r=signature_r,
        signature_s=signature_s,
    )


def signed_bytes(data: bytes) -> bytes:
    """The part of a raw report the AMD-SP signs (bytes 0x000-0x29F)."""
    return bytes(data[:SIGNED_SIZE])
