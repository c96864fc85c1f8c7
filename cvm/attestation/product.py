"""AMD EPYC product lines that support SEV-SNP, and how to recognise them."""

from __future__ import annotations

from enum import StrEnum


class Product(StrEnum):
    """Product line as AMD's KDS and certificate names spell it."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def from_name(cls, name: str) -> Product:
        """Map a certificate product name ("Milan-B0", "Genoa", "SEV-Turin") to a product."""
        base = name.removeprefix("SEV-VLEK-").removeprefix("SEV-").removeprefix("ARK-")
        base = base.split("-", 1)[0]
        for product in cls:
            if product.value.lower() == base.lower():
                return product
        raise ValueError(f"unknown SEV-SNP product name {name!r}")

    @classmethod
    def from_cpuid(cls, family: int, model: int) -> Product | None:
        """Product from the CPUID family/model a version 3+ report carries, if known."""
        if family == 0x19 and model <= 0x0F:
            return cls.MILAN
        if family == 0x19 and 0x10 <= model <= 0x1F:
            return cls.GENOA
        if family == 0x1A and model <= 0x1F:
            return cls.TURIN
        return None

    @property
    def has_fmc(self) -> bool:
        """Turin and later put an FMC SPL in the TCB and use a different byte layout."""
        return self is Product.TURIN

    @property
    def hwid_size(self) -> int:
        """Bytes of CHIP_ID that identify the chip (the VCEK's hwID extension)."""
        return 8 if self is Product.TURIN else 64
