"""`cvm rent --key-service`, `cvm lease policy` and `cvm lease rekey` as a renter types them:
bad input is refused in one line before any wallet or chain is touched, holders are checked
against the chain before anything is signed, and a rekey deposits a new key version whose
shares only the named holders open, then sets the chain's policy."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
import types
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from typer.testing import CliRunner

from cvm import key_release as kr
from cvm.cli import app
from cvm.cli import keys as keys_cli

RENTER = Account.from_key("0x" + "33" * 32)
STRANGER = Account.from_key("0x" + "44" * 32)
MEASUREMENT = bytes(range(48))
HOLDER_KEYS = [X25519PrivateKey.generate() for _ in range(4)]
HOLDERS = ["0x" + f"{0xB0 + i:02x}" * 20 for i in range(4)]


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture(autouse=True)
def key_policy_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """cvm.chain.key_service's KeyPolicy (a stand-in of the same shape until it is there)."""
    try:
        import cvm.chain.key_service  # noqa: F401
    except ImportError:
        module = types.ModuleType("cvm.chain.key_service")

        @dataclasses.dataclass(frozen=True)
        class KeyPolicy:
            measurements: tuple[bytes, ...]
            failover: bool
            threshold: int
            holders: tuple[str, ...]
            key_version: int
            manifest_hash: bytes

        module.KeyPolicy = KeyPolicy  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cvm.chain.key_service", module)


class FakeKeys:
    def __init__(self, active: list[str], policy: Any = None) -> None:
        self.active = active
        self.policy = policy
        self.calls: list[tuple[str, Any]] = []

    def active_holders(self) -> list[str]:
        return list(self.active)

    def holder_of(self, address: str) -> Any:
        index = [h.lower() for h in HOLDERS].index(address.lower())
        return types.SimpleNamespace(
            key=_public(HOLDER_KEYS[index]), stake=10, unbonding=0, unlocks_at=0, registered=True
        )

    def is_active_holder(self, address: str) -> bool:
        return address.lower() in [a.lower() for a in self.active]

    def key_policy_of(self, lease_id: int) -> Any:
        return self.policy

    def set_key_policy(self, lease_id: int, policy: Any) -> None:
        self.calls.append(("set_key_policy", policy))
        self.policy = policy

    def update_measurements(self, lease_id: int, measurements: list[bytes]) -> None:
        self.calls.append(("update_measurements", measurements))
        self.policy = dataclasses.replace(self.policy, measurements=tuple(measurements))

    def set_failover(self, lease_id: int, failover: bool) -> None:
        self.calls.append(("set_failover", failover))
        self.policy = dataclasses.replace(self.policy, failover=failover)


class FakeApi:
    def __init__(self) -> None:
        self.deposits: list[tuple[int, Any]] = []

    def get_lease(self, lease_id: int) -> None:
        """Indexed: the deposit may go."""

    def put_keys(self, lease_id: int, deposit: Any) -> dict:
        self.deposits.append((lease_id, deposit))
        return {}


class FakeRenter:
    def __init__(self, keys: FakeKeys, account: Any = RENTER) -> None:
        self.account = account
        self.api = FakeApi()
        self.chain = types.SimpleNamespace(
            keys=keys,
            deployment=types.SimpleNamespace(chain_id=31337, attestation_registry="0x" + "5a" * 20),
            leases=types.SimpleNamespace(
                get_lease=lambda lease_id: types.SimpleNamespace(renter=RENTER.address)
            ),
        )

    def signed_in_api(self) -> FakeApi:
        return self.api


def policy(**overrides: Any) -> Any:
    from cvm.chain.key_service import KeyPolicy

    fields = {"measurements": (MEASUREMENT,), "failover": True, "threshold": 2,
              "holders": tuple(HOLDERS[:3]), "key_version": 1,
              "manifest_hash": b"\x01" * 32}  # fmt: skip
    return KeyPolicy(**(fields | overrides))


def use(monkeypatch: pytest.MonkeyPatch, renter: FakeRenter) -> None:
    def opened(*args: Any, **kwargs: Any) -> FakeRenter:
        if kwargs.get("unlock", True) and renter.account is None:
            raise AssertionError("unlocked")
        return renter

    monkeypatch.setattr(keys_cli, "open_renter", opened)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1, result.output


# --- refused before a wallet or a chain is touched ----------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow-measurement", "zz"], "96 hex digits"),
        (["--allow-measurement", "ab" * 47], "96 hex digits"),
        (["--holders", f"{HOLDERS[0]},{HOLDERS[1]}", "--threshold", "3"], "--threshold 3"),
        (["--threshold", "0"], "--threshold 0"),
        (["--threshold", "1"], "--allow-threshold-one"),
        (["--holders", HOLDERS[0]], "--allow-threshold-one"),  # the default: min(2, 1) = 1
        (["--holders", "0x1234"], "not a 0x-prefixed"),
        (["--holders", f"{HOLDERS[0]},{HOLDERS[0]}"], "named twice"),
    ],
)
def test_rent_with_the_key_service_refuses_bad_input_first(args, message):
    result = run("rent", "--key-service", "--duration", "1h", "--deployment", "/nonexistent",
                 *args)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output
    _no_traceback(result)


def test_key_options_without_the_key_service_are_refused():
    result = run("rent", "--duration", "1h", "--threshold", "2")
    assert result.exit_code == 2 and "need --key-service" in result.output


def test_a_reserved_secret_name_is_refused(tmp_path):
    secret = tmp_path / "s"
    secret.write_text("x")
    result = run("rent", "--key-service", "--duration", "1h", "--secret", f"cvm.epoch={secret}")
    assert result.exit_code == 2 and "cvm.* names" in result.output


def test_policy_changes_check_their_hex_first():
    result = run("lease", "policy", "5", "--remove-measurement", "0x12")
    assert result.exit_code == 2 and "96 hex digits" in result.output
    _no_traceback(result)


# --- holders checked on chain -------------------------------------------------------------
def test_a_holder_that_is_not_active_and_staked_is_refused(monkeypatch):
    keys = FakeKeys(active=HOLDERS[:2], policy=policy())
    renter = FakeRenter(keys)
    use(monkeypatch, renter)
    result = run("lease", "rekey", "5", "--holders", f"{HOLDERS[0]},{HOLDERS[3]}")
    assert result.exit_code == 1, result.output
    assert "is not an active key holder" in result.output and HOLDERS[3][:10].lower() in (
        result.output.lower()
    )
    _no_traceback(result)
    assert keys.calls == [] and renter.api.deposits == []


def test_auto_holders_are_the_first_active_ones_and_need_enough_of_them():
    keys = FakeKeys(active=HOLDERS[:2])
    chain = FakeRenter(keys).chain
    with pytest.raises(kr.KeyServiceError, match="2 active key holder"):
        kr.resolve_holders(chain, None, 3)
    chosen = kr.resolve_holders(chain, None, 2)
    assert [h.address.lower() for h in chosen] == HOLDERS[:2]
    assert chosen[0].key == _public(HOLDER_KEYS[0])


# --- policy ---------------------------------------------------------------------------------
def test_policy_shows_and_changes_for_the_renter_only(monkeypatch):
    keys = FakeKeys(active=HOLDERS, policy=policy())
    use(monkeypatch, FakeRenter(keys))
    shown = run("lease", "policy", "5", "--json")
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["measurements"] == ["0x" + MEASUREMENT.hex()] and view["failover"] is True
    other = bytes([7]) * 48
    changed = run("lease", "policy", "5", "--allow-measurement", other.hex(), "--no-failover",
                  "--json")  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert [name for name, _ in keys.calls] == ["update_measurements", "set_failover"]
    view = json.loads(changed.output)
    assert view["measurements"] == ["0x" + MEASUREMENT.hex(), "0x" + other.hex()]
    assert view["failover"] is False
    removed = run("lease", "policy", "5", "--remove-measurement", "0x" + other.hex(), "--json")
    assert json.loads(removed.output)["measurements"] == ["0x" + MEASUREMENT.hex()]
    last = run("lease", "policy", "5", "--remove-measurement", MEASUREMENT.hex())
    assert last.exit_code == 2 and "at least one measurement" in last.output

    use(monkeypatch, FakeRenter(keys, account=STRANGER))
    refused = run("lease", "policy", "5", "--failover")
    assert refused.exit_code == 1 and "not yours" in refused.output


def test_policy_of_a_lease_without_one_says_so(monkeypatch):
    use(monkeypatch, FakeRenter(FakeKeys(active=HOLDERS)))
    result = run("lease", "policy", "5")
    assert result.exit_code == 1 and "has no key policy" in result.output


# --- rekey ----------------------------------------------------------------------------------
def test_rekey_deposits_the_next_version_then_sets_the_policy(monkeypatch, tmp_path):
    keys = FakeKeys(active=HOLDERS, policy=policy(key_version=3, failover=False))
    renter = FakeRenter(keys)
    use(monkeypatch, renter)
    old_root = kr.new_root()
    root_file = tmp_path / "old.json"
    kr.export_root(root_file, 5, 3, old_root)
    secret = tmp_path / "pw"
    secret.write_bytes(b"pw")
    exported = tmp_path / "new.json"
    result = run("lease", "rekey", "5", "--secret", f"db.password={secret}", "--root-key",
                 str(root_file), "--export-root-key", str(exported), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert view["key_version"] == 4 and view["carried_roots"] == 1 and view["secrets"] == 1
    ((name, set_policy),) = keys.calls
    assert name == "set_key_policy" and set_policy.key_version == 4
    assert set_policy.failover is False and set_policy.measurements == (MEASUREMENT,)
    [(lease_id, deposit)] = renter.api.deposits
    assert lease_id == 5 and deposit.manifest.keyVersion == 4
    assert "0x" + set_policy.manifest_hash.hex() == view["manifest_hash"]
    # Each holder opens its own share; two of them rebuild the exported root.
    version, new_root = kr.read_root(exported, 5)
    assert version == 4 and new_root != old_root
    shares = []
    for i, share in enumerate(deposit.shares[:2]):
        enc, sealed = base64.b64decode(share.enc), base64.b64decode(share.ciphertext)
        opened = kr.open_share(HOLDER_KEYS[i], enc, sealed, set_policy.manifest_hash)
        assert opened["key_version"] == 4 and opened["index"] == i + 1
        shares.append((opened["index"], base64.b64decode(opened["share"])))
    assert kr.combine_shares(shares) == new_root


def test_rekey_refuses_a_root_key_of_another_version(monkeypatch, tmp_path):
    use(monkeypatch, FakeRenter(FakeKeys(active=HOLDERS, policy=policy(key_version=2))))
    root_file = tmp_path / "old.json"
    kr.export_root(root_file, 5, 1, kr.new_root())
    result = run("lease", "rekey", "5", "--root-key", str(root_file))
    assert result.exit_code == 2 and "key version 1, the lease's is 2" in result.output


# --- cvm rent --key-service -----------------------------------------------------------------
class RentingRenter(FakeRenter):
    """Enough of cvm.renter.Renter for `cvm rent --no-wait` (no backend, no chain)."""

    def __init__(self, keys: FakeKeys) -> None:
        super().__init__(keys)
        self.events: list[str] = []
        self.chain.token = types.SimpleNamespace(decimals=lambda: 18)
        self.chain.deployment.extra = {}

    def matching_nodes(self, request: Any) -> list:
        return []

    def rent(self, request: Any) -> int:
        self.events.append("rent")
        return 9

    def report(self, lease_id: int) -> Any:
        return types.SimpleNamespace(as_dict=lambda: {"lease_id": lease_id})

    def with_amd_root(self, report: Any) -> Any:
        return report


def rent(renter: RentingRenter, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    import cvm.cli.renter as renter_cli

    monkeypatch.setattr(renter_cli, "open_renter", lambda *a, **k: renter)
    return run("rent", "--key-service", "--no-wait", "--duration", "1h", "--measurement",
               MEASUREMENT.hex(), "--json", *args)  # fmt: skip


def test_rent_with_the_key_service_deposits_after_the_lease_exists(monkeypatch, tmp_path):
    keys = FakeKeys(active=HOLDERS)
    renter = RentingRenter(keys)
    other = bytes([9]) * 48
    result = rent(renter, monkeypatch, "--allow-measurement", other.hex(), "--no-failover")
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)["keys"]
    assert view["key_version"] == 1 and view["threshold"] == 2
    assert [h.lower() for h in view["holders"]] == HOLDERS[:3]  # auto: the first 3 active
    assert view["root_key_exported_to"] is None
    assert [name for name, _ in keys.calls] == ["set_key_policy"]
    set_policy = keys.calls[0][1]
    assert set_policy.measurements == (MEASUREMENT, other) and set_policy.failover is False
    [(lease_id, deposit)] = renter.api.deposits
    assert lease_id == 9 and deposit.manifest.leaseId == 9 and deposit.bundle is None
    assert renter.events == ["rent"]


def test_threshold_one_needs_its_flag_and_is_warned_about_loudly(monkeypatch):
    """Threshold 1 hands every holder the whole root key: refused without
    --allow-threshold-one (rent and rekey), and with it a warning on stderr, even with --json."""
    keys = FakeKeys(active=HOLDERS)
    renter = RentingRenter(keys)
    result = rent(renter, monkeypatch, "--threshold", "1", "--allow-threshold-one")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keys"]["threshold"] == 1
    assert "every holder holds the WHOLE root key" in result.stderr
    rekeying = FakeRenter(FakeKeys(active=HOLDERS, policy=policy(key_version=3)))
    use(monkeypatch, rekeying)
    refused = run("lease", "rekey", "5", "--threshold", "1", "--json")
    assert refused.exit_code == 2 and "--allow-threshold-one" in refused.output
    assert rekeying.api.deposits == []
    allowed = run("lease", "rekey", "5", "--threshold", "1", "--allow-threshold-one", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert "every holder holds the WHOLE root key" in allowed.stderr


def test_rent_checks_the_holders_on_chain_before_paying(monkeypatch):
    keys = FakeKeys(active=HOLDERS[:2])
    renter = RentingRenter(keys)
    result = rent(renter, monkeypatch)  # auto wants 3, the chain has 2
    assert result.exit_code == 1 and "2 active key holder(s), 3 wanted" in result.output
    assert renter.events == [] and keys.calls == []
    named = rent(renter, monkeypatch, "--holders", f"{HOLDERS[0]},{HOLDERS[2]}")
    assert named.exit_code == 1 and "not an active key holder" in named.output
    assert renter.events == []


def test_a_key_service_lease_never_gets_this_clients_disk_key():
    """`cvm lease secrets put` to such a lease: a second disk key would fight the derived one."""
    from cvm.cli.guest import threshold_keyed

    assert threshold_keyed(FakeRenter(FakeKeys(active=HOLDERS, policy=policy())), 5)  # type: ignore[arg-type]
    assert not threshold_keyed(FakeRenter(FakeKeys(active=HOLDERS)), 5)  # type: ignore[arg-type]
    no_service = FakeRenter(FakeKeys(active=HOLDERS))
    no_service.chain.keys = None
    assert not threshold_keyed(no_service, 5)  # type: ignore[arg-type]


def test_secrets_too_large_for_the_bundle_are_refused_before_renting(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 40_000)
    result = run("rent", "--key-service", "--duration", "1h", "--image", "ab" * 32,
                 "--secret", f"blob={big}")  # fmt: skip
    assert result.exit_code == 2 and "above 32768" in result.output
