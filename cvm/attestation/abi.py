"""The SEV-SNP ATTESTATION_REPORT (AMD pub. 56860, table "ATTESTATION_REPORT structure").

Bytes to structure and back, nothing else: no signatures, no certificates. `parse` accepts
report versions 2 to 5 and rejects anything the specification forbids (wrong size, unknown
version or signature algorithm, reserved bits or bytes that must be zero) with a single
error type, `ReportFormatError`. `Report.to_bytes` is its exact inverse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
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

# One unpack for the whole report keeps parsing cheap next to the ECDSA check. Reserved
# ranges are pad bytes here ("x"): `_MBZ` checks them all at once, and pack() zeroes them.
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
    "4x"  # 0x04C reserved
    "64s"  # 0x050 REPORT_DATA
    "48s"  # 0x090 MEASUREMENT
    "32s"  # 0x0C0 HOST_DATA
    "48s"  # 0x0E0 ID_KEY_DIGEST
    "48s"  # 0x110 AUTHOR_KEY_DIGEST
    "32s"  # 0x140 REPORT_ID
    "32s"  # 0x160 REPORT_ID_MA
    "Q"  # 0x180 REPORTED_TCB
    "BBB"  # 0x188 CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3 and later)
    "21x"  # 0x18B reserved
    "64s"  # 0x1A0 CHIP_ID
    "Q"  # 0x1E0 COMMITTED_TCB
    "BBB"  # 0x1E8 CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR
    "x"  # 0x1EB reserved
    "BBB"  # 0x1EC COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR
    "x"  # 0x1EF reserved
    "Q"  # 0x1F0 LAUNCH_TCB
    "Q"  # 0x1F8 LAUNCH_MIT_VECTOR (version 5 and later)
    "Q"  # 0x200 CURRENT_MIT_VECTOR (version 5 and later)
    "152x"  # 0x208 reserved up to the signature
    "72s"  # 0x2A0 SIGNATURE.R (48-byte integer, zero-extended)
    "72s"  # 0x2E8 SIGNATURE.S (48-byte integer, zero-extended)
    "368x"  # 0x330 rest of the 512-byte signature field, zero for ECDSA P-384
)
assert _LAYOUT.size == REPORT_SIZE

# Must-be-zero ranges of the spec, (start, end, what), and those that depend on the version.
_RESERVED = (
    (0x04C, 0x050, "bytes 0x4C-0x4F"),
    (0x18B, 0x1A0, "bytes 0x18B-0x19F"),
    (0x1EB, 0x1EC, "byte 0x1EB"),
    (0x1EF, 0x1F0, "byte 0x1EF"),
    (0x208, 0x2A0, "bytes 0x208-0x29F"),
    (0x2A0 + 48, 0x2A0 + 72, "signature R past its 48 bytes"),
    (0x2E8 + 48, 0x2E8 + 72, "signature S past its 48 bytes"),
    (0x330, REPORT_SIZE, "signature bytes 0x330-0x49F"),
)
_RESERVED_BEFORE_V3 = ((0x188, 0x18B, "bytes 0x188-0x18A (CPUID fields, version 3 and later)"),)
_RESERVED_BEFORE_V5 = ((0x1F8, 0x208, "bytes 0x1F8-0x207 (mitigation vectors, version 5)"),)


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
        return _guest_policy(value)

    @classmethod
    def _decode(cls, value: int) -> GuestPolicy:
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


@lru_cache(maxsize=256)
def _guest_policy(value: int) -> GuestPolicy:
    # A fleet runs a handful of policies: decode each once (parsing is on the hot path).
    return GuestPolicy._decode(value)


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


def _ranges_for(version: int) -> tuple[tuple[int, int, str], ...]:
    ranges: tuple[tuple[int, int, str], ...] = _RESERVED
    if version < 3:
        ranges += _RESERVED_BEFORE_V3
    if version < 5:
        ranges += _RESERVED_BEFORE_V5
    return ranges


def _reserved_layout(version: int) -> struct.Struct:
    """A struct that unpacks exactly the must-be-zero byte ranges of `version`, in order."""
    fmt, position = "<", 0
    for start, end, _ in sorted(_ranges_for(version)):
        fmt += f"{start - position}x{end - start}s"
        position = end
    return struct.Struct(fmt + f"{REPORT_SIZE - position}x")


# Per version: (struct of its reserved ranges, the all-zero values they must unpack to), so
# that one unpack and one tuple comparison check every reserved byte.
_MBZ = {
    version: (layout, tuple(bytes(len(v)) for v in layout.unpack(bytes(REPORT_SIZE))))
    for version in range(MIN_VERSION, MAX_VERSION + 1)
    for layout in (_reserved_layout(version),)
}


@dataclass(slots=True)
class Report:
    """A parsed ATTESTATION_REPORT. Integers are as in the ABI; byte fields keep their size.

    Fields are in ABI order. Not frozen only because a frozen dataclass's __init__ costs more
    than the rest of parsing, which sits on the verifier's hot path: treat it as a value and
    derive changed copies with `dataclasses.replace`.
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
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes

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
        r = int.from_bytes(self.signature_r, "little")
        return r, int.from_bytes(self.signature_s, "little")

    def to_bytes(self) -> bytes:
        """Serialize to the 1184-byte ABI form (the exact inverse of `parse`)."""
        values = [getattr(self, name) for name in _FIELD_NAMES]
        values[2] = self.policy.raw
        values[9] = self.signer_info.to_int()
        for index, size in _BYTE_FIELD_SIZES.items():
            if not isinstance(values[index], bytes) or len(values[index]) != size:
                raise ReportFormatError(f"{_FIELD_NAMES[index]} must be {size} bytes")
        try:
            data = _LAYOUT.pack(*values)
        except (struct.error, ValueError, OverflowError, TypeError) as exc:
            raise ReportFormatError(f"report field out of range: {exc}") from exc
        # Re-parse so that to_bytes never emits what parse would refuse.
        parse(data)
        return data


_FIELD_NAMES = tuple(f.name for f in fields(Report))
_BYTE_FIELD_SIZES = {
    _FIELD_NAMES.index(name): size
    for name, size in (
        ("family_id", 16),
        ("image_id", 16),
        ("report_data", 64),
        ("measurement", 48),
        ("host_data", 32),
        ("id_key_digest", 48),
        ("author_key_digest", 48),
        ("report_id", 32),
        ("report_id_ma", 32),
        ("chip_id", 64),
        ("signature_r", ECDSA_COMPONENT_SIZE),
        ("signature_s", ECDSA_COMPONENT_SIZE),
    )
}


def _require_zero(data: bytes, start: int, end: int, what: str) -> None:
    value = data[start:end]
    if value.count(0) != len(value):
        raise ReportFormatError(f"{what} is reserved and must be zero (found {value.hex()})")


def _explain_mbz(data: bytes, version: int) -> None:
    """Slow path for bad input only: raise naming the first offending range."""
    for start, end, what in _ranges_for(version):
        _require_zero(data, start, end, what)
    raise ReportFormatError("a reserved field is not zero")


def parse(data: bytes) -> Report:
    """Parse a raw 1184-byte report; raise `ReportFormatError` for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ReportFormatError(f"a report is bytes, not {type(data).__name__}")
    if len(data) != REPORT_SIZE:
        raise ReportFormatError(f"a report is {REPORT_SIZE} bytes, got {len(data)}")
    values = list(_LAYOUT.unpack(data))
    version = values[0]
    mbz = _MBZ.get(version)
    if mbz is None:
        raise ReportFormatError(
            f"report VERSION {version} is not supported ({MIN_VERSION} to {MAX_VERSION})"
        )
    if mbz[0].unpack(data) != mbz[1]:
        _explain_mbz(bytes(data), version)
    values[2] = GuestPolicy.from_int(values[2])
    signer = values[9] = SignerInfo.from_int(values[9])
    signature_algo = values[6]
    # An unsigned report (SIGNING_KEY none) may carry algorithm 0; a signed one must be ECDSA.
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 and not (
        signer.signing_key is SigningKey.NONE and signature_algo == 0
    ):
        raise ReportFormatError(
            f"SIGNATURE_ALGO {signature_algo} is unknown (1 = ECDSA P-384 with SHA-384)"
        )
    return Report(*values)


def signed_bytes(data: bytes) -> bytes:
    """The part of a raw report the AMD-SP signs (bytes 0x000-0x29F)."""
    return bytes(data[:SIGNED_SIZE])
