from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.envelope import Opener
from gossiprec.crypto.errors import CertificateError, EnvelopeError
from gossiprec.crypto.replay import WINDOW, ReplayGuard
from gossiprec.crypto.wire import pack
from tests.cryptonet import Network, make_network

KIND_MODEL = 1


@pytest.fixture
def net(tmp_path: Path) -> Network:
    return make_network(tmp_path)


def test_round_trip_delivers_payload_sender_and_header(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"item embeddings", net.members["b"].cert, KIND_MODEL, now)
    opened = net.opener("b").open(sealed, now)
    assert opened.payload == b"item embeddings"
    assert opened.sender == net.members["a"].keys.node_id
    assert opened.header.kind == KIND_MODEL
    assert opened.header.seq >= int((now - 60) * 1_000_000)  # counters start at the clock
    assert b"item embeddings" not in sealed  # the broker sees ciphertext only


def test_every_single_byte_flip_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"x" * 64, net.members["b"].cert, KIND_MODEL, now)
    opener = net.opener("b")
    for index in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(sealed)
            flipped[index] ^= mask
            with pytest.raises(EnvelopeError):
                opener.open(bytes(flipped), now)
    assert sum(opener.rejected.values()) == 3 * len(sealed)
    assert opener.open(sealed, now).payload == b"x" * 64  # failures did not poison the window


def test_replay_is_rejected_also_after_the_receiver_restarts(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"once", net.members["b"].cert, KIND_MODEL, now)
    opener = net.opener("b")
    opener.open(sealed, now)
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    restarted = net.opener("b")  # a new process: state comes back from replay.sqlite
    with pytest.raises(EnvelopeError):
        restarted.open(sealed, now)
    assert opener.rejected["replay"] == 1 and restarted.rejected["replay"] == 1


def test_reordering_inside_the_window_is_accepted_and_stale_is_not(net: Network) -> None:
    now = time.time()
    sealer, cert = net.sealer("a"), net.members["b"].cert
    messages = [sealer.seal(str(i).encode(), cert, KIND_MODEL, now) for i in range(WINDOW + 2)]
    opener = net.opener("b")
    opener.open(messages[5], now)
    opener.open(messages[2], now)  # late but inside the window: fine
    opener.open(messages[-1], now)  # moves the window past messages[0]
    with pytest.raises(EnvelopeError):
        opener.open(messages[0], now)
    assert opener.rejected["replay"] == 1


def test_message_for_another_recipient_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"for b", net.members["b"].cert, KIND_MODEL, now)
    opener = net.opener("c")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"wrong_recipient": 1}


def test_sender_certified_by_another_networks_ca_is_rejected(net: Network, tmp_path: Path) -> None:
    # Same network name, different authority: an outsider with its own CA.
    other = make_network(tmp_path / "other", name="demo", nodes=("mallory",))
    mallory = other.members["mallory"]
    now = time.time()
    sealed = other.sealer("mallory").seal(b"poison", net.members["b"].cert, KIND_MODEL, now)
    directory = {**net.directory(), mallory.cert.node_id: mallory.cert}
    opener = Opener(
        net.members["b"].keys, net.authority.trust_store(), directory.get, net.opener("b")._replay
    )
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"certificate_foreign": 1}


def test_expired_certificate_is_rejected(net: Network) -> None:
    old = net.add("old", not_after=int(time.time()) + 10)
    now = time.time()
    sealed = net.sealer("old").seal(b"late", net.members["b"].cert, KIND_MODEL, now)
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now + 11)  # clock skew is fine, the certificate is not
    assert opener.rejected == {"certificate_expired": 1}
    assert old.cert.not_after < now + 11


def test_revoked_sender_is_rejected_and_an_older_list_cannot_undo_it(net: Network) -> None:
    trust = net.authority.trust_store()
    before = net.authority.revocation_list()
    assert trust.update_crl(net.authority.revoke({net.members["a"].cert.serial}, 0))
    now = time.time()
    sealed = net.sealer("a").seal(b"revoked", net.members["b"].cert, KIND_MODEL, now)
    opener = net.opener("b", trust)
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"certificate_revoked": 1}
    assert not trust.update_crl(before)  # version 0 < 1: ignored
    assert net.members["a"].cert.serial in trust.crl.revoked


def test_forged_or_foreign_revocation_lists_are_refused(net: Network, tmp_path: Path) -> None:
    trust = net.authority.trust_store()
    other = make_network(tmp_path / "other", name="demo", nodes=())
    forged = other.authority.revoke({net.members["a"].cert.serial}, 0)
    with pytest.raises(CertificateError):
        trust.update_crl(forged)
    decoded = RevocationList.decode(net.authority.revoke({99}, 0).encode())
    assert trust.update_crl(decoded) and 99 in trust.crl.revoked


@pytest.mark.parametrize("number", [float("inf"), 1e300, -1, True, "7", 2**63])
def test_a_revocation_list_with_a_number_out_of_range_is_refused_before_any_check(
    number: object,
) -> None:
    body = pack([1, "demo", number, 0, [3]])  # no valid signature needed to reach the decoder
    with pytest.raises(CertificateError, match="malformed revocation list"):
        RevocationList.decode(pack([body, b"\x00" * 64]))


def test_impersonation_by_an_admitted_node_is_rejected(net: Network) -> None:
    # c seals with its own keys but writes a's id into the header.
    now = time.time()
    sealed = net.sealer("c").seal(b"as a", net.members["b"].cert, KIND_MODEL, now)
    forged = sealed.replace(net.members["c"].keys.node_id, net.members["a"].keys.node_id)
    assert forged != sealed
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(forged, now)
    assert opener.rejected == {"decrypt": 1}  # the header is bound into the HPKE context


def test_clock_skew_beyond_the_limit_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"old", net.members["b"].cert, KIND_MODEL, now - 3_600)
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"clock_skew": 1}


def test_truncated_oversized_and_garbage_inputs_raise_only_the_opaque_error(net: Network) -> None:
    now = time.time()
    sealed = net.sealer("a").seal(b"p" * 100, net.members["b"].cert, KIND_MODEL, now)
    opener = Opener(
        net.members["b"].keys,
        net.authority.trust_store(),
        net.directory().get,
        net.opener("b")._replay,
        max_bytes=1_000,
    )
    for bad in (
        sealed[:-1],
        sealed[: len(sealed) // 2],
        b"",
        b"\xc1",
        b"not msgpack at all",
        sealed + b"\x00",
        b"\x93\x01\xc4\x00\xc4\x00",
        bytes(2_000),
    ):
        with pytest.raises(EnvelopeError) as caught:
            opener.open(bad, now)
        assert str(caught.value) == "envelope rejected"
    assert opener.rejected["oversized"] == 1
    assert opener.rejected["malformed"] >= 5


def test_rotation_keeps_old_certificates_working_until_retired(net: Network) -> None:
    b = net.members["b"]
    old_cert = b.cert
    b.keys = b.keys.rotated()
    now = time.time()
    sealed = net.sealer("a").seal(b"to old key", old_cert, KIND_MODEL, now)
    assert net.opener("b").open(sealed, now).payload == b"to old key"
    b.keys = b.keys.retired()
    late = net.sealer("a").seal(b"too late", old_cert, KIND_MODEL, now)
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(late, now)
    assert opener.rejected == {"unknown_key": 1}


def test_certificate_encoding_round_trips_and_rejects_tampering(net: Network) -> None:
    cert = net.members["a"].cert
    assert Certificate.decode(cert.encode()) == cert
    data = bytearray(cert.encode())
    data[-1] ^= 1
    with pytest.raises(CertificateError):
        net.authority.trust_store().check(Certificate.decode(bytes(data)), time.time())


@pytest.fixture(scope="module")
def fixed_net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Network, bytes, Opener]:
    net = make_network(tmp_path_factory.mktemp("hyp"))
    sealed = net.sealer("a").seal(b"v" * 40, net.members["b"].cert, KIND_MODEL, time.time())
    return net, sealed, net.opener("b")


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(max_size=512), st.binary(min_size=1, max_size=8).map(lambda b: b"\x93" + b)
    )
)
def test_arbitrary_bytes_raise_only_the_opaque_error(
    fixed_net: tuple[Network, bytes, Opener], data: bytes
) -> None:
    _, _, opener = fixed_net
    with pytest.raises(EnvelopeError):
        opener.open(data, time.time())


@settings(max_examples=2_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    position=st.integers(min_value=0),
    insert=st.binary(min_size=1, max_size=4),
    mode=st.sampled_from(["replace", "insert", "delete"]),
)
def test_mutated_envelopes_raise_only_the_opaque_error(
    fixed_net: tuple[Network, bytes, Opener], position: int, insert: bytes, mode: str
) -> None:
    _, sealed, opener = fixed_net
    at = position % len(sealed)
    if mode == "replace":
        mutated = sealed[:at] + insert + sealed[at + len(insert) :]
    elif mode == "insert":
        mutated = sealed[:at] + insert + sealed[at:]
    else:
        mutated = sealed[:at] + sealed[at + len(insert) :]
    if mutated == sealed:
        return
    with pytest.raises(EnvelopeError):
        opener.open(mutated, time.time())


@given(
    head=st.lists(st.one_of(st.integers(0, 2**40), st.binary(max_size=300)), max_size=14),
    tail=st.binary(max_size=70_000),
)
@settings(max_examples=200, deadline=None)
def test_pack_with_tail_is_exactly_msgpack(head: list[object], tail: bytes) -> None:
    from gossiprec.crypto.wire import pack_with_tail, unpack

    assert unpack(pack_with_tail(list(head), tail), max_size=10**6) == [*head, tail]


def test_a_sequence_jump_costs_nothing_and_numbers_past_the_limit_change_nothing(
    tmp_path: Path,
) -> None:
    guard = ReplayGuard(tmp_path / "replay.sqlite")
    sender = b"s" * 16
    guard.commit(sender, 5)
    assert guard.is_fresh(sender, 2**62) and not guard.is_fresh(sender, 2**63)
    guard.commit(sender, 2**62)  # no shift by 2^62 bits: the window starts again
    assert not guard.is_fresh(sender, 2**62) and guard.is_fresh(sender, 2**62 + 1)
    assert not guard.is_fresh(sender, 5)  # far below the window now
    assert guard.is_fresh(sender, 2**62 - WINDOW + 1) and not guard.is_fresh(sender, -1)
    reloaded = ReplayGuard(tmp_path / "replay.sqlite")
    assert not reloaded.is_fresh(sender, 2**62) and reloaded.is_fresh(sender, 2**62 + 1)


def test_an_envelope_whose_version_is_a_boolean_is_not_taken_for_version_1(net: Network) -> None:
    # Found by `gossiprec bench fuzz`: True == 1 in Python, so a frame with True where its
    # version belongs opened (the same message, but parsing must be strict about types).
    now = time.time()
    sealed = net.sealer("a").seal(b"x", net.members["b"].cert, KIND_MODEL, now)
    assert sealed[:2] == b"\x93\x01"  # [1, header, ciphertext]
    with pytest.raises(EnvelopeError):
        net.opener("b").open(b"\x93\xc3" + sealed[2:], now)
