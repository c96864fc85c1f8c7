"""The Debian dependency closure of a workload's packages (guest/packages.py), over
`apt-cache depends --recurse` output as apt prints it: alternatives, virtual packages and
`:any` qualifiers, minus what the guest image already has."""

from __future__ import annotations

import pytest

from guest import packages
from guest.packages import PackageError, closure_from_graph, parse_depends

# Shapes copied from apt-cache 2.6 on bookworm (trimmed).
APT_OUTPUT = """\
python3-flask
  Depends: python3-click
 |Depends: python3-importlib-metadata
  Depends: python3
  Depends: <python3:any>
    python3
python3-click
  Depends: <python3:any>
    python3
python3-importlib-metadata
  Depends: python3-zipp
python3-zipp
python3
  PreDepends: python3-minimal
  Depends: python3.11
python3-minimal
  PreDepends: python3.11-minimal
python3.11
  Depends: python3.11-minimal
python3.11-minimal
  PreDepends: libc6
<python3:any>
libc6
libpam-runtime
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libpam-modules
debconf
cdebconf
  Depends: libc6
libpam-modules
  PreDepends: <mail-transport-agent>
    exim4-daemon-light
    dma
exim4-daemon-light
dma
"""


def test_the_parse_keeps_alternatives_and_providers() -> None:
    graph, virtual = parse_depends(APT_OUTPUT)
    assert graph["python3-flask"][1] == [("python3-importlib-metadata", None), ("python3", None)]
    assert graph["python3-flask"][2] == [("python3", ["python3"])]
    assert graph["libpam-runtime"][0] == [
        ("debconf", None),
        ("debconf-2.0", ["cdebconf", "debconf"]),
    ]
    assert {"python3", "debconf-2.0", "mail-transport-agent"} <= virtual


def test_an_alternative_already_present_is_not_added() -> None:
    graph, virtual = parse_depends(APT_OUTPUT)
    present = {"python3.11-minimal", "libc6", "python3"}
    assert closure_from_graph(graph, virtual, ["python3-flask"], present) == [
        "python3-click", "python3-flask",
    ]  # fmt: skip


def test_the_first_alternative_and_the_first_provider_are_taken_otherwise() -> None:
    graph, virtual = parse_depends(APT_OUTPUT)
    assert closure_from_graph(graph, virtual, ["python3-flask"], {"libc6"}) == [
        "python3", "python3-click", "python3-flask", "python3-importlib-metadata",
        "python3-minimal", "python3-zipp", "python3.11", "python3.11-minimal",
    ]  # fmt: skip
    assert closure_from_graph(graph, virtual, ["libpam-runtime"], {"libc6"}) == [
        "debconf", "exim4-daemon-light", "libpam-modules", "libpam-runtime",
    ]  # fmt: skip
    assert closure_from_graph(graph, virtual, ["libpam-runtime"], {"dma", "libc6"}) == [
        "debconf", "libpam-modules", "libpam-runtime",
    ]  # fmt: skip


def test_an_unsatisfiable_dependency_names_it() -> None:
    graph, virtual = parse_depends("app\n  Depends: <nothing-provides-this>\n")
    with pytest.raises(PackageError, match="nothing-provides-this"):
        closure_from_graph(graph, virtual, ["app"], set())


def test_the_closure_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    graph, virtual = parse_depends(APT_OUTPUT)
    monkeypatch.setattr(packages, "MAX_CLOSURE", 2)
    with pytest.raises(PackageError, match="more than 2 packages"):
        closure_from_graph(graph, virtual, ["python3-flask"], set())


def test_a_requested_virtual_package_needs_one_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {
        ("depends", "awk"): "<awk>\n",
        ("showpkg", "awk"): "Package: awk\nReverse Provides: \nmawk 1.3.4 (= )\ngawk 5.2 (= )\n",
    }

    def apt(args: list[str]) -> str:
        return outputs[(args[1], args[-1])]

    monkeypatch.setattr(packages, "_apt", apt)
    with pytest.raises(PackageError, match="awk is virtual: name one of gawk, mawk"):
        packages.package_closure(["awk"], set())
