"""Launchers: one interface (launch, status, stop, running, report) and three kinds of guest."""

from __future__ import annotations

from node_agent.launcher.base import (
    GuestInfo,
    GuestReport,
    GuestSpec,
    GuestState,
    Launcher,
)

LAUNCHER_KINDS = ("simulated", "qemu", "qemu-snp")

__all__ = [
    "LAUNCHER_KINDS",
    "GuestInfo",
    "GuestReport",
    "GuestSpec",
    "GuestState",
    "Launcher",
]
