"""`cvm.api_models`: the spec hash is pinned by a fixed vector; states follow the chain's enums."""

from __future__ import annotations

from eth_utils import keccak

from cvm.api_models import AttestationState, LeaseState, private_spec_hash
from cvm.chain import AttestationStatus, LeaseStatus

# The canonical private spec, written out by hand: sorted keys, no spaces, UTF-8 (not
# \u escapes), the renter lower-cased, a null for what was not given.
CANONICAL = (
    b'{"cloud_init":null,"image":"debian-12 \xc3\xa9t\xc3\xa9",'
    b'"renter":"0xabcdefabcdefabcdefabcdefabcdefabcdefabcd",'
    b'"ssh_public_key":"ssh-ed25519 AAAA","version":1}'
)
SPEC_HASH = "0x145c943e662aba9a8de3f01bbbbab4d14fcd3e3a885582d54ed9e58d99944761"


def test_private_spec_hash_matches_a_fixed_vector() -> None:
    assert "0x" + keccak(CANONICAL).hex() == SPEC_HASH
    renter = "0xABCDEFabcdefABCDEFabcdefABCDEFabcdefABCD"
    assert private_spec_hash(renter, "debian-12 été", "ssh-ed25519 AAAA", None) == SPEC_HASH
    # Every field is bound: change one and the hash changes.
    assert private_spec_hash(renter, "debian-12 été", "ssh-ed25519 AAAA", "") != SPEC_HASH


def test_states_are_the_chain_statuses_by_name() -> None:
    assert [state.name for state in LeaseState] == [
        status.name for status in LeaseStatus if status != LeaseStatus.NONE
    ]
    assert {status.name for status in AttestationStatus} <= {s.name for s in AttestationState}
    assert all(state.value == state.name.lower() for state in (*LeaseState, *AttestationState))
