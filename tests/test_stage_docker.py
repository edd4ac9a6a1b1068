"""The Compose projects of `gossiprec sim docker`, in real containers on a private Docker engine.

Offline, as on a machine that reaches no image registry: the base image is Debian bookworm built
by debootstrap from Debian's packages (python3, mosquitto, rabbitmq-server) and imported, and the
node image installs from a wheelhouse (CPU torch from the local wheel).
- One mosquitto + 4 nodes with their data shards: every node turns healthy, the models reach
  consensus, one node container is killed (SIGKILL) and started again (it resumes from its
  checkpoint and store and rejoins).
- `--brokers 3`: a 3-node RabbitMQ cluster + 4 nodes spread over it: consensus, then one RabbitMQ
  container is killed and the nodes on it fail over and go on merging.
Everything is torn down after each. Needs root; `.ci/run` runs it after the suite
(`pytest -m stage`).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossiprec.cli.main import main
from gossiprec.sim.dataset import Dataset
from tests.stagetools import eventually, model_spread, require, run, say

pytestmark = pytest.mark.stage

NODES = 4
BASE_IMAGE = "gossiprec-base:bookworm-rabbitmq"
BASE_PACKAGES = "python3,python3-venv,mosquitto,rabbitmq-server,ca-certificates"
# Kept between runs on one machine, so a second run reuses the base image and build cache.
ENGINE_ROOT = Path(os.environ.get("GOSSIPREC_DOCKER_ROOT", "/var/tmp/gossiprec-dockerd"))
NODE_CONFIG = "/identity/node.toml"


@pytest.fixture(scope="module")
def engine() -> Iterator[dict[str, str]]:
    """A private dockerd (its own data root and socket; vfs storage, no iptables changes)."""
    assert os.geteuid() == 0, "a private dockerd needs root"
    require("dockerd", "docker", "debootstrap")
    ENGINE_ROOT.mkdir(parents=True, exist_ok=True)
    socket = ENGINE_ROOT / "docker.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
    log = (ENGINE_ROOT / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--iptables=false", "--data-root",
         str(ENGINE_ROOT / "data"), "--exec-root", str(ENGINE_ROOT / "exec"), "--pidfile",
         str(ENGINE_ROOT / "dockerd.pid"), "-H", f"unix://{socket}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        eventually(lambda: run("docker", "version", env=env, check=False).returncode == 0 or None,
                   120, "dockerd to answer")  # fmt: skip
        version = run("docker", "version", "-f", "{{.Server.Version}}", env=env).stdout.strip()
        say(f"dockerd up (engine {version})")
        yield env
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()
        say("dockerd stopped")


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the plugin is installed, else v1 (`docker-compose`)."""
    if run("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    require("docker-compose")
    return ["docker-compose"]


def build_base_image(env: dict[str, str], scratch: Path) -> None:
    """Debian bookworm from Debian's packages: python3 (venv), mosquitto, rabbitmq-server."""
    if run("docker", "image", "inspect", BASE_IMAGE, env=env, check=False).returncode == 0:
        say(f"base image {BASE_IMAGE}: already built on this engine")
        return
    rootfs = scratch / "rootfs"
    run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", rootfs,
        timeout=1200)  # fmt: skip
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=env,
                       check=True, capture_output=True)  # fmt: skip
    say(f"base image {BASE_IMAGE}: debootstrap --variant=minbase bookworm + docker import")


@pytest.fixture(scope="module")
def wheelhouse(engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base image on the engine, and wheels for every requirement (CPU torch included)."""
    scratch = tmp_path_factory.mktemp("images")
    build_base_image(engine, scratch)
    folder = scratch / "wheelhouse"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", folder, "torch==2.13.0",
        "setuptools", Path(__file__).resolve().parents[1], timeout=1200)  # fmt: skip
    say(f"wheelhouse: {len(list(folder.glob('*.whl')))} wheels (pip wheel, CPU torch)")
    return folder


class Project:
    """A generated Compose project, driven with compose and docker on the private engine."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        # vfs copies each container's whole image on creation: on a slow disk four at once
        # outlast compose's 60 s default for one engine request.
        self.folder, self.env = folder, {**env, "COMPOSE_HTTP_TIMEOUT": "600"}
        self.compose = [*compose_command(), "--project-directory", str(folder), "-f",
                        str(folder / "compose.yaml"), "-p", "gossiprecstage"]  # fmt: skip
        self.names = [f"node{i:02d}" for i in range(NODES)]
        self.ids: dict[str, str] = {}

    def up(self) -> None:
        run(*self.compose, "build", env=self.env, timeout=1800)
        say("images built offline: gossiprec:latest FROM the base, installed from the wheelhouse")
        run(*self.compose, "up", "-d", env=self.env, timeout=600)
        services = run(*self.compose, "ps", "--services", env=self.env).stdout.split()
        self.ids = {name: run(*self.compose, "ps", "-q", name, env=self.env).stdout.strip()
                    for name in services}  # fmt: skip

    def down(self) -> None:
        run(*self.compose, "down", "-v", "--remove-orphans", env=self.env, timeout=600,
            check=False)  # fmt: skip
        say("torn down")

    def health(self, name: str) -> str:
        return run("docker", "inspect", "-f", "{{.State.Health.Status}}", self.ids[name],
                   env=self.env).stdout.strip()  # fmt: skip

    def status(self, name: str) -> dict[str, Any]:
        out = run("docker", "exec", self.ids[name], "gossiprec", "status", "--config",
                  NODE_CONFIG, "--json", env=self.env).stdout  # fmt: skip
        return dict(json.loads(out))

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("docker", *args, env=self.env)

    def wait_healthy(self) -> None:
        def all_healthy() -> bool:
            states = {name: self.health(name) for name in self.names}
            if set(states.values()) != {"healthy"}:  # kept as `last` for the failure message
                raise AssertionError(f"health: {states}")
            return True

        eventually(all_healthy, 600, f"{NODES} healthy node containers")
        user = self.docker("exec", self.ids["node00"], "id", "-u").stdout.strip()
        say(f"{NODES} node containers healthy (running as uid {user})")
        assert user != "0", "containers never run as root"

    def wait_consensus(self) -> None:
        shards = [self.folder / "nodes" / n / "identity" / "shard.csv" for n in self.names]
        expected = [len(shard.read_text().splitlines()) - 1 for shard in shards]
        eventually(lambda: [self.status(n)["interactions"] for n in self.names] == expected
                   or None, 120, "every node to import its shard")  # fmt: skip
        data = [self.folder / "nodes" / n / "data" for n in self.names]
        spread = eventually(lambda: s if (s := model_spread(data)) is not None and s < 0.5
                            else None, 600, "consensus (checkpoints within 0.5)")  # fmt: skip
        versions = {n: self.status(n)["model_version"] for n in self.names}
        say(f"consensus: relative spread of the checkpointed item embeddings {spread:.3f}; "
            f"model versions {versions}")  # fmt: skip


def generate(folder: Path, wheelhouse: Path, *options: str) -> None:
    images = ["--base-image", BASE_IMAGE, "--broker-image", BASE_IMAGE, "--rabbitmq-image",
              BASE_IMAGE, "--wheelhouse", str(wheelhouse)]  # fmt: skip
    assert main(["sim", "docker", "--nodes", str(NODES), "--out", str(folder), *images,
                 *options]) == 0  # fmt: skip


def test_broker_and_four_node_containers_converge_and_a_killed_node_rejoins(
    engine: dict[str, str], wheelhouse: Path, tmp_path: Path, ml100k: Dataset
) -> None:
    started = time.monotonic()
    generate(tmp_path / "cluster", wheelhouse)
    project = Project(tmp_path / "cluster", engine)
    try:
        project.up()
        project.wait_healthy()
        project.wait_consensus()
        victim, status = "node01", project.status
        before = status(victim)
        project.docker("kill", project.ids[victim])
        say(f"{victim} killed (SIGKILL) at model version {before['model_version']}")
        project.docker("start", project.ids[victim])
        back = eventually(lambda: s if (s := status(victim))["broker"]["connected"] else None,
                          120, f"{victim} to answer again")  # fmt: skip
        logs = project.docker("logs", project.ids[victim])
        restored = [line for line in (logs.stdout + logs.stderr).splitlines() if "restored" in line]
        assert back["interactions"] == before["interactions"], "no acknowledged interaction lost"
        eventually(lambda: sum(p["state"] == "alive" for p in status(victim)["peers"])
                   == NODES - 1 or None, 120, f"{victim} to see its 3 peers")  # fmt: skip
        after = eventually(lambda: s if (s := status(victim))["updates_in"] >= 5 else None, 120,
                           f"{victim} to merge peers' models again")  # fmt: skip
        say(f"{victim} back: {restored[-1].split(': ', 1)[-1]}; {NODES - 1} peers alive, "
            f"{after['updates_in']} updates merged, version {after['model_version']}")  # fmt: skip
        eventually(lambda: project.health(victim) == "healthy" or None, 300,
                   f"{victim} healthy again")  # fmt: skip
    finally:
        project.down()
    say(f"container test: {time.monotonic() - started:.0f} s")


def test_nodes_on_a_rabbitmq_cluster_in_containers_survive_the_loss_of_a_broker(
    engine: dict[str, str], wheelhouse: Path, tmp_path: Path, ml100k: Dataset
) -> None:
    started = time.monotonic()
    generate(tmp_path / "cluster", wheelhouse, "--brokers", "3")
    project = Project(tmp_path / "cluster", engine)
    try:
        project.up()
        project.wait_healthy()

        def spread() -> dict[str, str] | None:
            endpoints = {n: project.status(n)["broker"]["endpoint"] for n in project.names}
            return endpoints if len({e.split(":")[0] for e in endpoints.values()}) >= 2 else None

        # Nodes start on brokers 1, 2, 3, 1; one that found its first broker not yet ready
        # (joining the cluster) moves back to it once it answers (broker.failback, 60 s).
        endpoints = eventually(spread, 300, "the nodes to spread over the RabbitMQ nodes")
        failbacks = {n: project.status(n)["broker"]["failbacks"] for n in project.names}
        say(f"brokers in use: {endpoints}; failbacks {failbacks}")
        per_broker = collections.Counter(e.split(":")[0] for e in endpoints.values())
        project.wait_consensus()
        dead = per_broker.most_common(1)[0][0]
        moved = [n for n, endpoint in endpoints.items() if endpoint.startswith(dead)]
        before = {n: project.status(n)["updates_in"] for n in project.names}
        project.docker("kill", project.ids[dead])
        say(f"{dead} killed (SIGKILL); on it: {moved}")

        def failed_over() -> dict[str, Any] | None:
            statuses = {n: project.status(n) for n in project.names}
            done = all(s["broker"]["connected"] and not s["broker"]["endpoint"].startswith(dead)
                       and s["updates_in"] >= before[n] + 5
                       for n, s in statuses.items())  # fmt: skip
            return statuses if done else None

        after = eventually(failed_over, 300, "every node merging again, none on the dead broker")
        for name in moved:
            link = after[name]["broker"]
            say(f"{name}: now on {link['endpoint']}, failovers {link['failovers']}, "
                f"{link['last_outage']:.2f} s without a broker")  # fmt: skip
            assert link["failovers"] >= 1
        merged = {n: after[n]["updates_in"] - before[n] for n in project.names}
        say(f"updates merged since the kill: {merged}")
    finally:
        project.down()
    say(f"broker-cluster container test: {time.monotonic() - started:.0f} s")
