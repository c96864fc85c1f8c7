"""`cvm.eip712`: the node messages sign and recover under their domain only."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from cvm.eip712 import (
    Domain,
    Heartbeat,
    LeaseSpecRequest,
    SignatureError,
    check_timestamp,
    node_message,
    recover_node_signer,
    sign_heartbeat,
    sign_node_message,
    verify_node_message,
)

DOMAIN = Domain(chain_id=31337, node_registry="0x" + "11" * 20)


def test_heartbeat_digest_is_the_eip712_one() -> None:
    node = Account.create()
    beat = Heartbeat(node.address, 1, 2, 3, 4, 5)
    # The same typed data written out by hand, as a wallet or another language would.
    expected = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Heartbeat": [
                    {"name": "node", "type": "address"},
                    {"name": "freeVcpus", "type": "uint32"},
                    {"name": "freeMemoryMib", "type": "uint32"},
                    {"name": "freeDiskGib", "type": "uint32"},
                    {"name": "runningLeases", "type": "uint32"},
                    {"name": "timestamp", "type": "uint64"},
                ],
            },
            "primaryType": "Heartbeat",
            "domain": {
                "name": "cvm",
                "version": "1",
                "chainId": 31337,
                "verifyingContract": "0x" + "11" * 20,
            },
            "message": {
                "node": node.address,
                "freeVcpus": 1,
                "freeMemoryMib": 2,
                "freeDiskGib": 3,
                "runningLeases": 4,
                "timestamp": 5,
            },
        }
    )
    assert node_message(beat, DOMAIN) == expected
    signed = sign_heartbeat(beat, DOMAIN, node.key)
    assert recover_node_signer(beat, signed.signature, DOMAIN) == node.address
    verify_node_message(signed.heartbeat, signed.signature, DOMAIN)


def test_signatures_do_not_cross_domains_or_messages() -> None:
    node, other = Account.create(), Account.create()
    beat = Heartbeat(node.address, 1, 2, 3, 4, 5)
    signed = sign_heartbeat(beat, DOMAIN, node.key)
    for domain in (Domain(1, DOMAIN.node_registry), Domain(31337, "0x" + "22" * 20)):
        with pytest.raises(SignatureError):
            verify_node_message(signed.heartbeat, signed.signature, domain)
    with pytest.raises(SignatureError):
        verify_node_message(Heartbeat(node.address, 9, 2, 3, 4, 5), signed.signature, DOMAIN)
    with pytest.raises(SignatureError, match="does not belong"):
        sign_heartbeat(beat, DOMAIN, other.key)
    request = LeaseSpecRequest(node.address, 7, 5, 11)
    signature = sign_node_message(request, DOMAIN, node.key)
    verify_node_message(request, signature, DOMAIN)
    with pytest.raises(SignatureError):
        verify_node_message(LeaseSpecRequest(node.address, 8, 5, 11), signature, DOMAIN)
    with pytest.raises(SignatureError):
        verify_node_message(LeaseSpecRequest(node.address, 7, 5, 12), signature, DOMAIN)
    with pytest.raises(TypeError):
        LeaseSpecRequest(node.address, 7, 5)  # type: ignore[call-arg]  # the nonce is required
    # A heartbeat signature is not a spec request signature (different primary type).
    with pytest.raises(SignatureError):
        verify_node_message(request, signed.signature, DOMAIN)


def test_malformed_values_are_refused() -> None:
    address = Account.create().address
    for bad in (
        lambda: Heartbeat("0x12", 1, 1, 1, 1, 1),
        lambda: Heartbeat(address, -1, 1, 1, 1, 1),
        lambda: Heartbeat(address, 2**32, 1, 1, 1, 1),
        lambda: Heartbeat(address, 1, 1, 1, 1, 2**64),
        lambda: Heartbeat(address, True, 1, 1, 1, 1),
        lambda: LeaseSpecRequest(address, -1, 1, 1),
    ):
        with pytest.raises(SignatureError):
            bad()
    beat = Heartbeat(address, 1, 1, 1, 1, 1)
    for signature in ("0x", "0xzz", "0x" + "00" * 64, "0x" + "00" * 65):
        with pytest.raises(SignatureError):
            recover_node_signer(beat, signature, DOMAIN)
    check_timestamp(100, 160, 60)
    with pytest.raises(SignatureError, match="window"):
        check_timestamp(100, 161, 60)


def test_guest_access_signs_its_forwarded_ports_as_a_struct_array() -> None:
    """`GuestAccess.ports` is `PortForward{guestPort, hostPort}[]`: the digest is the one a
    wallet or another language computes from the same typed data, every port is covered, and
    the shape of before issue 19 (no ports) does not verify as this one."""
    from cvm.guest_access import GuestAccess

    node = Account.create()
    access = GuestAccess(node.address, 7, "203.0.113.7", 2222, ((80, 40001), (8080, 40002)), 9)
    domain_type = [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ]
    expected = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": domain_type,
                "GuestAccess": [
                    {"name": "node", "type": "address"},
                    {"name": "leaseId", "type": "uint256"},
                    {"name": "host", "type": "string"},
                    {"name": "sshPort", "type": "uint16"},
                    {"name": "ports", "type": "PortForward[]"},
                    {"name": "timestamp", "type": "uint64"},
                ],
                "PortForward": [
                    {"name": "guestPort", "type": "uint16"},
                    {"name": "hostPort", "type": "uint16"},
                ],
            },
            "primaryType": "GuestAccess",
            "domain": DOMAIN.as_eip712(),
            "message": {
                "node": node.address, "leaseId": 7, "host": "203.0.113.7", "sshPort": 2222,
                "ports": [{"guestPort": 80, "hostPort": 40001},
                          {"guestPort": 8080, "hostPort": 40002}],
                "timestamp": 9,
            },
        }
    )  # fmt: skip
    assert node_message(access, DOMAIN) == expected

    signature = sign_node_message(access, DOMAIN, node.key)
    verify_node_message(access, signature, DOMAIN)
    for changed in (((80, 40001), (8080, 40666)), ((80, 40001),), ()):
        other = GuestAccess(node.address, 7, "203.0.113.7", 2222, changed, 9)
        with pytest.raises(SignatureError):
            verify_node_message(other, signature, DOMAIN)
    with pytest.raises(SignatureError):  # another deployment
        verify_node_message(access, signature, Domain(1, "0x" + "11" * 20))

    # The SSH-only shape a node signed before (no `ports`): not this message.
    old = encode_typed_data(
        full_message={
            "types": {"EIP712Domain": domain_type, "GuestAccess": [
                {"name": "node", "type": "address"}, {"name": "leaseId", "type": "uint256"},
                {"name": "host", "type": "string"}, {"name": "sshPort", "type": "uint16"},
                {"name": "timestamp", "type": "uint64"}]},
            "primaryType": "GuestAccess",
            "domain": DOMAIN.as_eip712(),
            "message": {"node": node.address, "leaseId": 7, "host": "203.0.113.7",
                        "sshPort": 2222, "timestamp": 9},
        }
    )  # fmt: skip
    old_signature = "0x" + bytes(node.sign_message(old).signature).hex()
    empty = GuestAccess(node.address, 7, "203.0.113.7", 2222, (), 9)
    with pytest.raises(SignatureError):
        verify_node_message(empty, old_signature, DOMAIN)


@pytest.mark.parametrize(
    "ports",
    [
        ((8080, 1), (80, 2)),  # not sorted
        ((80, 1), (80, 2)),  # a guest port twice
        ((0, 1),),
        ((80, 0),),
        ((80, 65536),),
        ((80,),),
        [(80, 1)],  # a list, not a tuple
        tuple((port, port) for port in range(1, 34)),  # more than MAX_ARRAY
    ],
)
def test_guest_access_refuses_a_malformed_port_list(ports: object) -> None:
    from cvm.guest_access import GuestAccess

    with pytest.raises(SignatureError):
        GuestAccess("0x" + "22" * 20, 7, "203.0.113.7", 2222, ports, 9)  # type: ignore[arg-type]
