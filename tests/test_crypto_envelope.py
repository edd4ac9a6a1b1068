from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossiprec.crypto.aead import AES_256_GCM, CHACHA20_POLY1305, NAMES, fastest
from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.crypto.envelope import SESSIONS_PER_SENDER, Header, Opener, Sealer
from gossiprec.crypto.errors import CertificateError, EnvelopeError, SealError
from gossiprec.crypto.prekey import Prekeys
from gossiprec.crypto.replay import WINDOW, ReplayWindow, SequenceCounter
from gossiprec.crypto.wire import pack, pack_with_tail, unpack
from tests.cryptonet import Network, make_network

KIND_MODEL = 1


@pytest.fixture(params=[CHACHA20_POLY1305, AES_256_GCM], ids=NAMES.get)
def net(tmp_path: Path, request: pytest.FixtureRequest) -> Network:
    """Every property holds whichever AEAD the sender's sessions use."""
    return make_network(tmp_path, aead=request.param)


def header_of(sealed: bytes) -> Header:
    return Header.decode(unpack(sealed, max_size=1 << 24)[1])


def test_round_trip_delivers_payload_sender_and_header(net: Network) -> None:
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"item embeddings", "b", now)
    opened = net.opener("b").open(sealed, now)
    assert opened.payload == b"item embeddings"
    assert opened.sender == net.members["a"].keys.node_id
    assert opened.header.kind == KIND_MODEL and opened.header.counter == 0
    assert opened.header.session >= int((now - 60) * 1_000_000)  # numbers start at the clock
    assert b"item embeddings" not in sealed  # the broker sees ciphertext only


def test_a_receiver_opens_either_aead_and_a_sender_picks_this_machines_faster(
    tmp_path: Path,
) -> None:
    net = make_network(tmp_path)
    assert net.sealer("a").aead == fastest() in NAMES
    opener, now = net.opener("b"), time.time()
    for aead in NAMES:
        net.aead = aead
        sealed = net.seal(net.sealer("a"), b"either", "b", now)
        opened = opener.open(sealed, now)
        assert opened.payload == b"either" and opened.header.aead == aead
        # The id is signed: the same frame claiming the other cipher does not open.
        other = next(a for a in NAMES if a != aead)
        version, header, ciphertext = unpack(sealed, max_size=1 << 24)
        fields = unpack(header, max_size=512)
        fields[7] = other
        fresh = net.opener("b")  # the established one refuses any other opening ("reopened")
        with pytest.raises(EnvelopeError):
            fresh.open(pack_with_tail([version, pack(fields)], ciphertext), now)
        assert fresh.rejected == {"signature": 1}


def test_every_single_byte_flip_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"x" * 64, "b", now)
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
    sealer = net.sealer("a")
    sealed = net.seal(sealer, b"once", "b", now)
    opener = net.opener("b")
    opener.open(sealed, now)
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    net.members["b"].restart()  # a new process: new prekeys, no session state at all
    restarted = net.opener("b")
    with pytest.raises(EnvelopeError):
        restarted.open(sealed, now)
    assert opener.rejected["replay"] == 1 and restarted.rejected["unknown_prekey"] == 1
    # The sender, told the new prekey by the next beacon, opens a new session transparently.
    assert restarted.open(net.seal(sealer, b"again", "b", now), now).payload == b"again"
    assert sealer.sessions_opened == 2


def test_reordering_inside_the_window_is_accepted_and_stale_is_not(net: Network) -> None:
    now = time.time()
    sealer = net.sealer("a")
    messages = [net.seal(sealer, str(i).encode(), "b", now) for i in range(WINDOW + 2)]
    opener = net.opener("b")
    opener.open(messages[5], now)
    opener.open(messages[2], now)  # late but inside the window: fine
    opener.open(messages[-1], now)  # moves the window past messages[0]
    with pytest.raises(EnvelopeError):
        opener.open(messages[0], now)
    assert opener.rejected["replay"] == 1


def test_message_for_another_recipient_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"for b", "b", now)
    opener = net.opener("c")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"wrong_recipient": 1}


def test_sender_certified_by_another_networks_ca_is_rejected(net: Network, tmp_path: Path) -> None:
    # Same network name, different authority: an outsider with its own CA.
    other = make_network(tmp_path / "other", name="demo", nodes=("mallory",))
    mallory = other.members["mallory"]
    now = time.time()
    b = net.members["b"]
    sealed = other.sealer("mallory").seal(b"poison", b.cert, b.prekey, KIND_MODEL, now)
    directory = {**net.directory(), mallory.cert.node_id: mallory.cert}
    opener = Opener(b.keys, net.authority.trust_store(), directory.get, b.prekeys)
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"certificate_foreign": 1}


def test_expired_certificate_is_rejected(net: Network) -> None:
    old = net.add("old", not_after=int(time.time()) + 10)
    now = time.time()
    sealed = net.seal(net.sealer("old"), b"late", "b", now)
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now + 11)  # clock skew is fine, the certificate is not
    assert opener.rejected == {"certificate_expired": 1}
    assert old.cert.not_after < now + 11


def test_revoked_sender_is_rejected_on_its_live_session_and_an_older_list_cannot_undo_it(
    net: Network,
) -> None:
    trust = net.authority.trust_store()
    before = net.authority.revocation_list()
    now = time.time()
    sealer, opener = net.sealer("a"), net.opener("b", trust)
    assert opener.open(net.seal(sealer, b"before", "b", now), now).payload == b"before"
    assert trust.update_crl(net.authority.revoke({net.members["a"].cert.serial}, 0))
    with pytest.raises(EnvelopeError):  # the same session, the next message
        opener.open(net.seal(sealer, b"revoked", "b", now), now)
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
    sealed = net.seal(net.sealer("c"), b"as a", "b", now)
    forged = sealed.replace(net.members["c"].keys.node_id, net.members["a"].keys.node_id)
    assert forged != sealed
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(forged, now)
    assert opener.rejected == {"signature": 1}  # c's signature is not a's


def test_clock_skew_beyond_the_limit_is_rejected(net: Network) -> None:
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"old", "b", now - 3_600)
    opener = net.opener("b")
    with pytest.raises(EnvelopeError):
        opener.open(sealed, now)
    assert opener.rejected == {"clock_skew": 1}


def test_truncated_oversized_and_garbage_inputs_raise_only_the_opaque_error(net: Network) -> None:
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"p" * 100, "b", now)
    opener = net.opener("b", max_bytes=1_000)
    for bad in (
        sealed[:-1],
        sealed[: len(sealed) // 2],
        b"",
        b"\xc1",
        b"not msgpack at all",
        sealed + b"\x00",
        b"\x93\x02\xc4\x00\xc4\x00",
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
    sealed = net.sealer("a").seal(b"to old key", old_cert, b.prekey, KIND_MODEL, now)
    assert net.opener("b").open(sealed, now).payload == b"to old key"
    b.keys = b.keys.retired()
    late = net.sealer("a").seal(b"too late", old_cert, b.prekey, KIND_MODEL, now)
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
    sealed = net.seal(net.sealer("a"), b"v" * 40, "b", time.time())
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
    head=st.lists(st.one_of(st.integers(0, 127), st.binary(max_size=70_000)), max_size=14),
    tail=st.binary(max_size=70_000),
)
@settings(max_examples=200, deadline=None)
def test_pack_with_tail_is_exactly_msgpack(head: list[object], tail: bytes) -> None:
    from gossiprec.crypto.wire import pack_with_tail, unpack, unpack_with_tail

    framed = pack_with_tail(list(head), tail)
    assert unpack(framed, max_size=10**7) == [*head, tail]
    items, view = unpack_with_tail(framed, head=len(head), max_size=10**7, max_head_bytes=10**7)
    assert items == list(head) and bytes(view) == tail


@pytest.mark.parametrize("item", [128, -1, True, None, 1.5, "text", [1]])
def test_unpack_with_tail_refuses_head_items_other_than_small_integers_and_bytes(
    item: object,
) -> None:
    from gossiprec.crypto.wire import pack_with_tail, unpack_with_tail

    with pytest.raises(ValueError, match="neither a small integer nor bytes"):
        unpack_with_tail(pack_with_tail([item], b"tail"), head=1, max_size=100)


@given(data=st.binary(max_size=64), head=st.integers(0, 3))
@settings(max_examples=2_000, deadline=None)
def test_unpack_with_tail_raises_only_value_error(data: bytes, head: int) -> None:
    from gossiprec.crypto.wire import unpack_with_tail

    try:
        items, view = unpack_with_tail(data, head=head, max_size=1_000)
    except ValueError:
        return
    start = len(data) - len(view)  # a frame: the view is the bin32 that ends it
    assert len(items) == head and data[start - 5] == 0xC6 and bytes(view) == data[start:]


def test_a_counter_jump_costs_nothing_and_numbers_past_the_limit_change_nothing() -> None:
    window = ReplayWindow()
    window.commit(5)
    assert window.is_fresh(2**62) and not window.is_fresh(2**63)
    window.commit(2**62)  # no shift by 2^62 bits: the window starts again
    assert not window.is_fresh(2**62) and window.is_fresh(2**62 + 1)
    assert not window.is_fresh(5)  # far below the window now
    assert window.is_fresh(2**62 - WINDOW + 1) and not window.is_fresh(-1)


def test_an_envelope_whose_version_is_a_boolean_is_not_taken_for_version_1(net: Network) -> None:
    # Found by `gossiprec bench fuzz`: True == 1 in Python, so a frame with True where its
    # version belongs opened (the same message, but parsing must be strict about types).
    now = time.time()
    sealed = net.seal(net.sealer("a"), b"x", "b", now)
    assert sealed[:2] == b"\x93\x03"  # [3, header, ciphertext]
    with pytest.raises(EnvelopeError):
        net.opener("b").open(b"\x93\xc3" + sealed[2:], now)


def test_a_session_is_authenticated_once_and_its_nonces_are_its_counter(net: Network) -> None:
    now = time.time()
    sealer, opener = net.sealer("a"), net.opener("b")
    headers = [opener.open(net.seal(sealer, bytes([i]), "b", now), now).header for i in range(50)]
    assert sealer.sessions_opened == opener.sessions_opened == 1  # one signature, one agreement
    assert len({h.session for h in headers}) == 1
    assert [h.counter for h in headers] == list(range(50))  # the nonce: never twice in a key


def test_rekeying_opens_a_new_session_and_the_older_ones_stop_opening(net: Network) -> None:
    now = time.time()
    sealer = Sealer(net.members["a"].keys, net.authority.network,
                    SequenceCounter(net.members["a"].folder / "seq"), rekey_messages=2)  # fmt: skip
    opener = net.opener("b")
    sealed = [net.seal(sealer, bytes([i]), "b", now) for i in range(2 * (SESSIONS_PER_SENDER + 1))]
    sessions = sorted({header_of(m).session for m in sealed})
    assert len(sessions) == SESSIONS_PER_SENDER + 1 and sealer.sessions_opened == len(sessions)
    for message in sealed[2:]:  # the newest sessions, and their messages out of order
        opener.open(message, now)
    with pytest.raises(EnvelopeError):
        opener.open(sealed[0], now)  # the oldest session, never seen: superseded
    assert opener.rejected == {"superseded": 1}
    late = net.seal(sealer, b"later", "b", now + REKEY_SECONDS_PLUS)
    assert header_of(late).session > sessions[-1], "a session also ends by age"


REKEY_SECONDS_PLUS = 901.0


def test_a_rotated_out_prekey_opens_nothing_and_its_session_keys_are_forgotten(
    net: Network,
) -> None:
    now = time.time()
    b = net.members["b"]
    b.prekeys = Prekeys(now, lifetime=60)
    sealer, opener = net.sealer("a"), net.opener("b")
    first = b.prekeys.current(now)
    old = sealer.seal(b"old", b.cert, first, KIND_MODEL, now)
    opener.open(old, now)
    assert b.prekeys.current(now + 60) != first  # rotated: the first is still held
    assert b.prekeys.private(first) is not None
    newer = b.prekeys.current(now + 120)  # rotated again: the first is gone
    assert b.prekeys.private(first) is None
    with pytest.raises(EnvelopeError):
        opener.open(sealer.seal(b"in flight", b.cert, first, KIND_MODEL, now + 120), now + 120)
    assert opener.rejected == {"unknown_prekey": 1}
    fresh = sealer.seal(b"new", b.cert, newer, KIND_MODEL, now + 120)
    assert opener.open(fresh, now + 120).payload == b"new"
    assert all(s.prekey != first for s in opener._sessions.values()), "old keys dropped"


def test_a_low_order_prekey_cannot_be_sealed_to(net: Network) -> None:
    b = net.members["b"]
    with pytest.raises(SealError):
        net.sealer("a").seal(b"x", b.cert, bytes(32), KIND_MODEL, time.time())


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=12), data=st.data())
def test_any_order_of_a_sessions_messages_opens_each_once(
    fixed_net: tuple[Network, bytes, Opener], payloads: list[bytes], data: st.DataObject
) -> None:
    net, _, _ = fixed_net
    now = time.time()
    sealer, opener = net.sealer("c"), net.opener("b")
    sealed = [net.seal(sealer, p, "b", now) for p in payloads]
    order = data.draw(st.permutations(list(range(len(sealed)))))
    assert [opener.open(sealed[i], now).payload for i in order] == [payloads[i] for i in order]
    for message in sealed:
        with pytest.raises(EnvelopeError):
            opener.open(message, now)
    assert opener.rejected == {"replay": len(sealed)}
