"""The Compose project of `gossiprec sim docker`, in real containers on a private Docker engine.

Offline, as on a machine that reaches no image registry: the base image is Debian bookworm built
by debootstrap from Debian's packages (python3 and mosquitto) and imported, and the node image
installs from a wheelhouse (CPU torch from the local wheel). Then broker + 4 nodes with their
data shards start, every node turns healthy, the models reach consensus, one node container is
killed (SIGKILL) and started again (it resumes from its checkpoint and store and rejoins), and
everything is torn down. Needs root; `.ci/run` runs it after the suite (`pytest -m stage`).
"""

from __future__ import annotations

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
BASE_IMAGE = "gossiprec-base:bookworm"
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
    """Debian bookworm from Debian's packages, with python3 (venv) and mosquitto."""
    if run("docker", "image", "inspect", BASE_IMAGE, env=env, check=False).returncode == 0:
        say(f"base image {BASE_IMAGE}: already built on this engine")
        return
    rootfs = scratch / "rootfs"
    run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,mosquitto,"
        "ca-certificates", "bookworm", rootfs, timeout=1200)  # fmt: skip
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=env,
                       check=True, capture_output=True)  # fmt: skip
    say(f"base image {BASE_IMAGE}: debootstrap --variant=minbase bookworm + docker import")


def test_broker_and_four_node_containers_converge_and_a_killed_node_rejoins(
    engine: dict[str, str], tmp_path: Path, ml100k: Dataset
) -> None:
    started = time.monotonic()
    build_base_image(engine, tmp_path)
    wheelhouse = tmp_path / "wheelhouse"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheelhouse, "torch==2.13.0",
        "setuptools", Path(__file__).resolve().parents[1], timeout=1200)  # fmt: skip
    say(f"wheelhouse: {len(list(wheelhouse.glob('*.whl')))} wheels (pip wheel, CPU torch)")
    project = tmp_path / "cluster"
    images = ["--base-image", BASE_IMAGE, "--broker-image", BASE_IMAGE, "--wheelhouse", wheelhouse]
    assert main(["sim", "docker", "--nodes", str(NODES), "--out", str(project),
                 *map(str, images)]) == 0  # fmt: skip
    compose = [*compose_command(), "--project-directory", str(project), "-f",
               str(project / "compose.yaml"), "-p", "gossiprecstage"]  # fmt: skip
    names = [f"node{i:02d}" for i in range(NODES)]
    try:
        run(*compose, "build", env=engine, timeout=1800)
        say("images built offline: gossiprec:latest FROM the base, installed from the wheelhouse")
        run(*compose, "up", "-d", env=engine, timeout=600)
        ids = {name: run(*compose, "ps", "-q", name, env=engine).stdout.strip() for name in names}

        def health(name: str) -> str:
            state = run("docker", "inspect", "-f", "{{.State.Health.Status}}", ids[name],
                        env=engine).stdout  # fmt: skip
            return state.strip()

        def status(name: str) -> dict[str, Any]:
            out = run("docker", "exec", ids[name], "gossiprec", "status", "--config",
                      NODE_CONFIG, "--json", env=engine).stdout  # fmt: skip
            return dict(json.loads(out))

        eventually(lambda: all(health(n) == "healthy" for n in names) or None, 300,
                   "4 healthy node containers")  # fmt: skip
        user = run("docker", "exec", ids["node00"], "id", "-u", env=engine).stdout.strip()
        say(f"{NODES} node containers healthy (running as uid {user})")
        assert user != "0", "containers never run as root"

        shards = [project / "nodes" / n / "identity" / "shard.csv" for n in names]
        expected = [len(shard.read_text().splitlines()) - 1 for shard in shards]
        eventually(lambda: [status(n)["interactions"] for n in names] == expected or None, 120,
                   "every node to import its shard")  # fmt: skip
        data = [project / "nodes" / n / "data" for n in names]
        spread = eventually(lambda: s if (s := model_spread(data)) is not None and s < 0.5
                            else None, 600, "consensus (checkpoints within 0.5)")  # fmt: skip
        versions = {n: status(n)["model_version"] for n in names}
        say(f"consensus: relative spread of the checkpointed item embeddings {spread:.3f}; "
            f"model versions {versions}")  # fmt: skip

        victim = "node01"
        before = status(victim)
        run("docker", "kill", ids[victim], env=engine)
        say(f"{victim} killed (SIGKILL) at model version {before['model_version']}")
        run("docker", "start", ids[victim], env=engine)
        back = eventually(lambda: s if (s := status(victim))["broker"]["connected"] else None,
                          120, f"{victim} to answer again")  # fmt: skip
        logs = run("docker", "logs", ids[victim], env=engine)
        restored = [line for line in (logs.stdout + logs.stderr).splitlines() if "restored" in line]
        assert back["interactions"] == before["interactions"], "no acknowledged interaction lost"
        eventually(lambda: sum(p["state"] == "alive" for p in status(victim)["peers"])
                   == NODES - 1 or None, 120, f"{victim} to see its 3 peers")  # fmt: skip
        after = eventually(lambda: s if (s := status(victim))["updates_in"] >= 5 else None, 120,
                           f"{victim} to merge peers' models again")  # fmt: skip
        say(f"{victim} back: {restored[-1].split(': ', 1)[-1]}; {NODES - 1} peers alive, "
            f"{after['updates_in']} updates merged, version {after['model_version']}")  # fmt: skip
        eventually(lambda: health(victim) == "healthy" or None, 300, f"{victim} healthy again")
    finally:
        run(*compose, "down", "-v", "--remove-orphans", env=engine, timeout=600, check=False)
        say("torn down")
    say(f"container test: {time.monotonic() - started:.0f} s")
