"""The Debian packages a workload adds to the guest's root file system: the dependency closure
of the names it asks for, minus what the guest image already carries. Runs on the host
(stdlib only, plus `apt-cache`), like guest/build.py.

    package_closure(packages, present) -> sorted package names to download and unpack
    package_versions(names) -> {name: candidate version}   (what the builder will download)
    download_closure(packages, present, debs) -> (.deb paths, {name: version})

The image builder (guest.build.build(out_dir, cache_dir, workload=...)) does, in this order:

    debs, versions = download_closure(
        workload.packages, set(PACKAGES) | {kernel_package()}, cache_dir / "debs")
    ... unpack the base packages and `debs`, add the guest's own files ...
    workload.materialize(root, versions)     # cvm.images.workload.Workload: OCI base, files,
                                             # users, disk mount point, /etc/cvm/workload.json
    manifest["workload"] = workload.summary()

`PackageError` is this module's one error (not a BuildError: guest.build imports this module).

Only Depends and Pre-Depends are followed (no Recommends or Suggests, as a minimal image
wants). An alternative group (`a | b`) is satisfied by any member already chosen or present,
otherwise by its first real member; a virtual package (`<mail-transport-agent>`) by a provider
already chosen or present, otherwise by the first one apt lists. `:any` and `:native`
qualifiers are dropped (the guest is one architecture).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

MAX_CLOSURE = 2000  # packages in one closure: a workload wanting more is refused
_DEPENDS = re.compile(r"^ ( |\|)(PreDepends|Depends): (\S+)$")
_APT_CACHE_DEPENDS = [
    "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
    "--no-breaks", "--no-replaces", "--no-enhances",
]  # fmt: skip


class PackageError(Exception):
    """The packages cannot be resolved; the message names the package."""


def _bare(name: str) -> str:
    return name.split(":", 1)[0]


def _apt(args: list[str]) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    except FileNotFoundError:
        raise PackageError("apt-cache is not installed (a Debian host is needed)") from None
    if result.returncode != 0:
        raise PackageError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-400:]}")
    return result.stdout


# One dependency: its alternatives, each (name, providers); providers is None for a real
# package, a list (maybe empty) for a virtual one.
Group = list[tuple[str, list[str] | None]]


def parse_depends(text: str) -> tuple[dict[str, list[Group]], set[str]]:
    """`apt-cache depends` output -> (package -> its dependency groups, virtual names)."""
    graph: dict[str, list[Group]] = {}
    virtual: set[str] = set()
    current: list[Group] | None = None
    group: Group = []
    last: tuple[str, list[str] | None] | None = None
    open_group = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            name = line.strip()
            if name.startswith("<") and name.endswith(">"):
                virtual.add(_bare(name[1:-1]))
                current = None
            else:
                current = graph.setdefault(_bare(name), [])
            group, last, open_group = [], None, False
            continue
        if current is None:
            continue
        match = _DEPENDS.match(line)
        if match is not None:
            alternative, _, target = match.groups()
            if not open_group:
                group = []
                current.append(group)
            is_virtual = target.startswith("<") and target.endswith(">")
            last = (_bare(target.strip("<>")), [] if is_virtual else None)
            if is_virtual:
                virtual.add(last[0])
            group.append(last)
            open_group = alternative == "|"
        elif line.startswith("    ") and last is not None and last[1] is not None:
            last[1].append(_bare(line.strip()))  # a provider of the virtual package above
        # other relations (Recommends, ...) are not asked for and never appear
    return graph, virtual


def _pick(group: Group, chosen: set[str], graph: dict[str, list[Group]]) -> str:
    """The package that satisfies `group`: "" if one chosen or present already does."""
    for name, providers in group:
        if providers is None and name in chosen:
            return ""
        if providers is not None and any(provider in chosen for provider in providers):
            return ""
    for name, providers in group:
        if providers is None and name in graph:
            return name
        for provider in providers or []:
            if provider in graph:
                return provider
    wanted = " | ".join(name for name, _ in group)
    raise PackageError(f"no installable package satisfies {wanted}")


def closure_from_graph(
    graph: dict[str, list[Group]],
    virtual: set[str],
    packages: Iterable[str],
    present: Iterable[str],
) -> list[str]:
    """The closure over a parsed graph (see `package_closure`); `packages` are real names."""
    have = set(present)
    chosen = set(have)
    pending = [_bare(name) for name in packages]
    while pending:
        name = pending.pop()
        if name in chosen:
            continue
        if name not in graph:
            raise PackageError(f"Debian package {name} is not known to apt: check the name")
        chosen.add(name)
        if len(chosen) - len(have) > MAX_CLOSURE:
            raise PackageError(f"the packages need more than {MAX_CLOSURE} packages")
        for group in graph[name]:
            pick = _pick(group, chosen, graph)
            if pick and pick not in chosen:
                pending.append(pick)
    return sorted(chosen - have)


def _providers(name: str) -> list[str]:
    """The real packages that provide `name` (`apt-cache showpkg`'s Reverse Provides)."""
    lines = _apt(["apt-cache", "showpkg", name]).splitlines()
    if "Reverse Provides: " not in lines:
        return []
    start = lines.index("Reverse Provides: ") + 1
    return sorted({line.split()[0] for line in lines[start:] if line.strip()})


def _concrete(name: str, present: set[str]) -> str:
    """A requested virtual package replaced by its one provider (or the one present)."""
    providers = _providers(name)
    if not providers:
        raise PackageError(f"Debian package {name} is not known to apt: check the name")
    if len(providers) == 1:
        return providers[0]
    for provider in providers:
        if provider in present:
            return provider
    raise PackageError(f"Debian package {name} is virtual: name one of {', '.join(providers[:8])}")


def package_closure(packages: Iterable[str], present: Iterable[str]) -> list[str]:
    """Every package `packages` need (Depends and Pre-Depends, recursively) that is not in
    `present`, sorted by name; `PackageError` naming a package apt does not know. A requested
    virtual package stands for its only provider; with several, the caller must choose."""
    have = set(present)
    wanted = sorted({_bare(name) for name in packages})
    if not wanted:
        return []
    try:
        graph, virtual = parse_depends(_apt([*_APT_CACHE_DEPENDS, *wanted]))
    except PackageError as exc:
        if "No packages found" not in str(exc):
            raise
        raise PackageError(
            f"Debian package {wanted[0]} is not known to apt: check the name"
        ) from None
    concrete = []
    for name in wanted:
        if name in graph and name not in virtual:
            concrete.append(name)
        else:
            concrete.append(_concrete(name, have))
    if concrete != wanted:
        graph, virtual = parse_depends(_apt([*_APT_CACHE_DEPENDS, *sorted(set(concrete))]))
    return closure_from_graph(graph, virtual, concrete, have)


def download_closure(
    packages: Iterable[str], present: Iterable[str], debs: Path
) -> tuple[list[Path], dict[str, str]]:
    """`package_closure`'s packages downloaded into `debs` by guest/build.py's `download`
    (cached there), and their versions (for `Workload.materialize`)."""
    from guest.build import download  # here: guest.build may import this module

    names = package_closure(packages, present)
    if not names:
        return [], {}
    versions = package_versions(names)
    return download(names, debs), versions


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """The candidate version of each package (what `apt-get download` fetches)."""
    names = sorted(set(names))
    if not names:
        return {}
    versions: dict[str, str] = {}
    current = None
    for line in _apt(["apt-cache", "policy", *names]).splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif current is not None and line.strip().startswith("Candidate:"):
            versions[current] = line.split()[-1]
    missing = [name for name in names if versions.get(name, "(none)") == "(none)"]
    if missing:
        raise PackageError(f"Debian package {missing[0]} has no candidate: run `apt-get update`")
    return versions
