from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gossiprec.cli.main import main
from gossiprec.crypto.errors import KeyFileError
from gossiprec.crypto.keys import ENCRYPTION_FILE, SIGNING_FILE, NodeKeys, node_id_of
from gossiprec.crypto.replay import SequenceCounter
from tests.cryptonet import make_network


def test_keys_are_saved_0600_and_reload_to_the_same_identity(tmp_path: Path) -> None:
    keys = NodeKeys.generate()
    keys.save(tmp_path / "node")
    for name in (SIGNING_FILE, ENCRYPTION_FILE):
        assert stat.S_IMODE((tmp_path / "node" / name).stat().st_mode) == 0o600
    loaded = NodeKeys.load(tmp_path / "node")
    assert loaded.node_id == keys.node_id == node_id_of(keys.signing_public)
    assert loaded.encryption_public == keys.encryption_public
    assert "PRIVATE" not in repr(loaded)


def test_group_readable_private_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    NodeKeys.generate().save(tmp_path)
    (tmp_path / SIGNING_FILE).chmod(0o640)
    with pytest.raises(KeyFileError, match=r"chmod 600 .*signing\.key"):
        NodeKeys.load(tmp_path)


def test_sequence_counter_skips_the_unused_block_after_a_restart(tmp_path: Path) -> None:
    counter = SequenceCounter(tmp_path / "seq", block=10, now=0)
    assert [counter.next() for _ in range(3)] == [0, 1, 2]
    restarted = SequenceCounter(tmp_path / "seq", block=10, now=0)
    assert restarted.next() == 10  # 3..9 may never be used: skipped, never reused


def test_a_node_that_lost_its_data_folder_starts_above_every_number_it_sent(
    tmp_path: Path,
) -> None:
    before = SequenceCounter(tmp_path / "old" / "seq", now=1_000.0)
    sent = [before.next() for _ in range(5_000)]
    fresh = SequenceCounter(tmp_path / "new" / "seq", now=1_001.0)  # a second later, no folder
    assert fresh.next() > max(sent)


SENDER = """
import sys, time
from pathlib import Path
from gossiprec.crypto.certificate import Certificate
from gossiprec.crypto.envelope import Sealer
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.replay import SequenceCounter
folder, network = Path(sys.argv[1]), sys.argv[2]
cert, prekey = Certificate.decode(bytes.fromhex(sys.argv[3])), bytes.fromhex(sys.argv[4])
sealer = Sealer(NodeKeys.load(folder), network, SequenceCounter(folder / "seq", block=25))
while True:
    print(sealer.seal(b"update", cert, prekey, 1, time.time()).hex(), flush=True)
"""


def _run_and_kill(folder: Path, arguments: list[str], lines: int) -> list[bytes]:
    command = [sys.executable, "-c", SENDER, str(folder), *arguments]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    ) as child:
        assert child.stdout is not None
        out = [bytes.fromhex(child.stdout.readline().strip()) for _ in range(lines)]
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: it is still sealing
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    return out


def test_a_sender_killed_20_times_mid_session_never_reuses_a_nonce(tmp_path: Path) -> None:
    net = make_network(tmp_path)
    a, b = net.members["a"], net.members["b"]
    opener = net.opener("b")  # a real receiver, alive across all the sender's lives
    arguments = [net.authority.network, b.cert.encode().hex(), b.prekey.hex()]
    runs: list[list[tuple[int, int]]] = []
    for _run in range(20):
        sealed = _run_and_kill(a.folder, arguments, 30)
        headers = [opener.open(m, time.time()).header for m in sealed]
        runs.append([(h.session, h.counter) for h in headers])
    nonces = [pair for run in runs for pair in run]  # a nonce is (session key, counter)
    assert len(nonces) == len(set(nonces)) == 600
    sessions = [run[0][0] for run in runs]
    assert all(len({s for s, _ in run}) == 1 for run in runs), "one session per life"
    assert sessions == sorted(set(sessions)), "each life opens a newer session"
    assert sum(opener.rejected.values()) == 0 and opener.sessions_opened == 20


@pytest.mark.parametrize(
    "command",
    [
        ["keys"],
        ["keys", "init"],
        ["keys", "rotate"],
        ["ca"],
        ["ca", "init"],
        ["ca", "issue"],
        ["ca", "revoke"],
    ],
)
def test_identity_commands_have_help(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: gossiprec" in capsys.readouterr().out


def test_ca_and_keys_commands_admit_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gossiprec.node.identity import load_identity

    ca, node = tmp_path / "ca", tmp_path / "node"
    assert main(["ca", "init", "--dir", str(ca), "--network", "shops"]) == 0
    assert main(["keys", "init", "--dir", str(node)]) == 0
    assert main(["ca", "issue", "--dir", str(ca), "--node-dir", str(node), "--days", "1"]) == 0
    keys, cert, trust = (identity := load_identity(node)).keys, identity.certificate, identity.trust
    trust.check(cert, time.time())
    assert cert.node_id == keys.node_id and trust.network == "shops"
    assert main(["ca", "revoke", "--dir", str(ca), "--node-id", keys.node_id.hex()]) == 0
    capsys.readouterr()
    # Errors name the fix and exit 2.
    assert main(["keys", "init", "--dir", str(node)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["ca", "init", "--dir", str(ca), "--network", "shops"]) == 2
    assert main(["ca", "issue", "--dir", str(tmp_path / "none"), "--node-dir", str(node)]) == 2
    assert "gossiprec ca init" in capsys.readouterr().err
    (node / SIGNING_FILE).chmod(0o644)
    assert main(["keys", "rotate", "--dir", str(node)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_node_init_with_a_ca_yields_a_loadable_admitted_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gossiprec.node.config import load_config
    from gossiprec.node.identity import load_identity

    ca, node = tmp_path / "ca", tmp_path / "node"
    assert main(["ca", "init", "--dir", str(ca), "--network", "shops"]) == 0
    assert main(["node", "init", "--dir", str(node), "--ca", str(ca), "--n-items", "50"]) == 0
    config = load_config(node / "node.toml", environ={})
    assert (config.data_dir, config.model.n_items) == (node.resolve(), 50)
    identity = load_identity(node)
    identity.trust.check(identity.certificate, time.time())
    capsys.readouterr()
    assert main(["node", "init", "--dir", str(node)]) == 2
    assert "node.toml already exists" in capsys.readouterr().err


def test_the_readmes_steps_in_order_keys_then_certificate_then_node_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gossiprec.node.identity import load_identity

    ca, node = tmp_path / "ca", tmp_path / "node1"
    assert main(["ca", "init", "--dir", str(ca), "--network", "shops"]) == 0
    capsys.readouterr()
    assert main(["keys", "init", "--dir", str(node), "--json"]) == 0
    node_id = json.loads(capsys.readouterr().out)["node_id"]
    assert main(["ca", "issue", "--dir", str(ca), "--node-dir", str(node)]) == 0
    capsys.readouterr()
    serial = load_identity(node).certificate.serial
    assert main(["node", "init", "--dir", str(node), "--ca", str(ca), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    # The keys and the certificate it already had are kept, not replaced.
    assert made["node_id"] == node_id and not made["issued_now"]
    assert load_identity(node).certificate.serial == serial
