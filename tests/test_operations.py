"""Operations: real `gossiprec node run` daemons hurt as an operator's bad day would hurt them.

kill -9 and SIGTERM in the middle of an ingest, the broker killed and restarted, a full disk,
a revocation published to the network (and surviving restarts), a wrong broker password.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossiprec.cli.main import main
from gossiprec.node.checkpoint import load_checkpoint
from gossiprec.node.errors import ControlError
from gossiprec.node.node import CHECKPOINT_FILE
from gossiprec.sim.broker import Mosquitto
from gossiprec.sim.compose import mosquitto_password_line
from tests.daemonnet import ROW_IDS, Daemon, alive_peers, gossiprec, init_nodes, started, wait_for

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

Row = tuple[int, int]


class Feeder:
    """Ingests batches of new rows from a thread until the node stops answering; keeps every
    row the node acknowledged."""

    def __init__(self, daemon: Daemon, first_user: int = 0) -> None:
        self.daemon = daemon
        self.acknowledged: list[Row] = []
        self.refusals: list[str] = []
        self._user = first_user
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _feed(self) -> None:
        while not self._stop.is_set():
            rows = [(self._user, item) for item in range(0, 200, 10)]
            try:
                self.daemon.ask("ingest", rows=[list(row) for row in rows])
            except ControlError as error:  # refused (a full disk) or gone (killed)
                self.refusals.append(str(error))
                if not self.daemon.running():
                    return
                time.sleep(0.1)
                continue
            self.acknowledged.extend(rows)
            self._user += 1


def stored_rows(data_dir: Path) -> set[Row]:
    uri = f"file:{data_dir / 'store.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        return {(u, i) for u, i in db.execute("SELECT user, item FROM interactions")}


@pytest.fixture
def two_nodes(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[list[Daemon]]:
    with started(init_nodes(tmp_path, mosquitto.url, 2), ROW_IDS) as daemons:
        yield daemons


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_signal_mid_ingest_loses_no_acknowledged_interaction(
    two_nodes: list[Daemon], signum: signal.Signals
) -> None:
    daemon = two_nodes[0]
    daemon.wait_ready()
    with Feeder(daemon) as feeder:
        assert wait_for(lambda: len(feeder.acknowledged) >= 400, 60)
        code = daemon.signal(signum)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    if signum == signal.SIGTERM:  # a clean stop: requests under way were answered, not cut off
        assert "stopped cleanly" in daemon.output() and "Traceback" not in daemon.output()
    acknowledged = set(feeder.acknowledged)
    assert acknowledged <= stored_rows(daemon.config.parent)
    daemon.start()
    assert daemon.wait_ready()["interactions"] >= len(acknowledged)


def test_the_broker_killed_and_restarted_every_node_reconnects(
    two_nodes: list[Daemon], mosquitto: Mosquitto
) -> None:
    for daemon in two_nodes:
        daemon.wait_ready()
    assert wait_for(lambda: all(alive_peers(d.ask("status")) == 1 for d in two_nodes), 30)
    mosquitto.kill()
    assert wait_for(lambda: not any(d.ask("status")["broker"]["connected"] for d in two_nodes), 30)
    unhealthy = gossiprec("status", "--healthcheck", "--grace", "0", "--config",
                          str(two_nodes[0].config))  # fmt: skip
    assert unhealthy.returncode == 3 and "broker link down" in unhealthy.stderr
    mosquitto.start()
    assert wait_for(lambda: all(d.ask("status")["broker"]["connected"] for d in two_nodes), 60)
    before = [d.ask("status")["updates_in"] for d in two_nodes]
    assert wait_for(lambda: all(d.ask("status")["updates_in"] > b
                                for d, b in zip(two_nodes, before, strict=True)), 60)  # fmt: skip
    healthy = gossiprec("status", "--healthcheck", "--config", str(two_nodes[0].config))
    assert healthy.returncode == 0, healthy.stderr


def test_a_revocation_published_reaches_every_node_and_survives_restarts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    configs = init_nodes(tmp_path, mosquitto.url, 3)
    with started(configs) as daemons:
        ids = [d.wait_ready()["node_id"] for d in daemons]
        assert wait_for(lambda: all(alive_peers(d.ask("status")) == 2 for d in daemons), 30)
        ca = str(tmp_path / "ca")
        assert main(["ca", "revoke", "--dir", ca, "--node-id", ids[2]]) == 0
        published = time.monotonic()
        assert main(["ca", "publish", "--dir", ca, "--broker", mosquitto.url]) == 0

        def refused(daemon: Daemon) -> bool:
            return ids[2] not in {p["node_id"] for p in daemon.ask("status")["peers"]
                                  if p["state"] == "alive"}  # fmt: skip

        assert wait_for(lambda: all(refused(d) for d in daemons[:2]), 30)
        print(f"revocation refused everywhere {time.monotonic() - published:.2f} s after publish")
        assert wait_for(lambda: daemons[2].ask("status")["revoked"], 10)
        assert "is revoked" in daemons[2].output()

        # The broker forgets the retained list (no persistence) and node 0 restarts; the revoked
        # node is compromised and ignores its revocation (its copy of the list is gone).
        mosquitto.kill()
        mosquitto.start()
        for daemon in (daemons[0], daemons[2]):
            daemon.signal(signal.SIGTERM)
        (configs[2].parent / "gossip" / "crl.bin").unlink()
        for daemon in (daemons[0], daemons[2]):
            daemon.start()
        assert not daemons[2].wait_ready()["revoked"]  # it does not know, and speaks again
        daemons[0].wait_ready()
        assert wait_for(lambda: daemons[0].ask("status")["rejected"].get(
            "beacon:certificate_revoked", 0) >= 2, 30)  # fmt: skip
        assert refused(daemons[0]) and refused(daemons[1])


def test_a_wrong_broker_password_makes_the_healthcheck_fail(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(mosquitto_password_line("node", "right") + "\n")
    with Mosquitto(extra_config=f"allow_anonymous false\npassword_file {passwd}\n") as broker:
        (config,) = init_nodes(tmp_path, broker.url, 1)
        daemon = Daemon(config, {"GOSSIPREC_BROKER_USERNAME": "node",
                                 "GOSSIPREC_BROKER_PASSWORD": "wrong"})  # fmt: skip
        daemon.start()
        try:
            daemon.wait_ready()

            def check() -> subprocess.CompletedProcess[str]:
                return gossiprec("status", "--healthcheck", "--grace", "1", "--config",
                                 str(config))  # fmt: skip

            assert wait_for(lambda: check().returncode == 3, 30)
            assert "broker link down" in check().stderr
            assert "ERROR" in daemon.output() and "refused the login" in daemon.output()
        finally:
            daemon.stop()


def _mount_tmpfs(folder: Path, megabytes: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk needs root")
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                              str(folder)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    # Unbuffered: a buffered file would try its last, unwritten bytes again on close, and fail.
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65_536)
        except OSError:
            pass
    return filler


def test_a_full_disk_loses_nothing_acknowledged_and_never_truncates_a_checkpoint(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 24)
    try:
        assert main(["ca", "init", "--dir", str(tmp_path / "ca"), "--network", "disk"]) == 0
        daemons = []
        for name, parent in (("full", disk), ("peer", tmp_path)):
            assert main(["node", "init", "--dir", str(parent / name), "--ca",
                         str(tmp_path / "ca"), "--broker", mosquitto.url]) == 0  # fmt: skip
            daemons.append(Daemon(parent / name / "node.toml", ROW_IDS))
        full, peer = daemons
        data = disk / "full"
        for daemon in daemons:
            daemon.start()
        try:
            for daemon in daemons:
                daemon.wait_ready()
            with Feeder(full) as feeder:
                assert wait_for(lambda: (full.ask("status")["checkpoints"]["version"] or 0) > 0, 60)
                filler = _fill(disk)
                # Full: checkpoints fail, ingests are refused, the daemon lives and says so.
                assert wait_for(lambda: full.ask("status")["checkpoints"]["failed"] >= 3, 60)
                assert wait_for(lambda: len(feeder.refusals) >= 3, 60)
                assert any("database or disk is full" in r for r in feeder.refusals)
                unhealthy = gossiprec("status", "--healthcheck", "--config", str(full.config))
                assert unhealthy.returncode == 3 and "checkpoints failing" in unhealthy.stderr
                _, meta = load_checkpoint(data / CHECKPOINT_FILE)  # whole and readable
                assert meta["version"] == full.ask("status")["checkpoints"]["version"]
                assert full.running()
            filler.unlink()  # space again; then a crash, so no final checkpoint is written
            peer.stop()  # no more merges: the version stays where the checkpoint has it
            last_good = load_checkpoint(data / CHECKPOINT_FILE)[1]["version"]
            full.signal(signal.SIGKILL)
            assert set(feeder.acknowledged) <= stored_rows(data)
            full.start()
            restarted = full.wait_ready()
            assert restarted["model_version"] == last_good > 0
            assert restarted["interactions"] >= len(set(feeder.acknowledged))
            print(f"full disk: {len(feeder.acknowledged)} acknowledged, 0 lost, "
                  f"{len(feeder.refusals)} refused; model version {last_good} kept")  # fmt: skip
        finally:
            for daemon in daemons:
                daemon.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_shutdown_answers_requests_under_way(tmp_path: Path) -> None:
    # Unit level: a request in progress when the server closes still gets its reply.
    from gossiprec.node.control import ControlServer, request

    async def slow(_request: dict[str, object]) -> dict[str, object]:
        await asyncio.sleep(0.5)
        return {"done": True}

    async def scenario() -> dict[str, object]:
        socket = tmp_path / "s.sock"
        async with ControlServer(socket, {"slow": slow}):
            asked = asyncio.ensure_future(request(socket, "slow"))
            await asyncio.sleep(0.1)  # under way when the server starts to close
        return await asked

    assert asyncio.run(scenario()) == {"done": True}
