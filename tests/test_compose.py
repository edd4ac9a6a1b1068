"""`gossiprec sim docker`: the Compose project is valid, and its node services, run as local
processes against a mosquitto using the generated broker config, converge with auth and ACLs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from compose_spec import PyCompose

from gossiprec.cli.main import main
from gossiprec.gossip import topics
from gossiprec.sim.broker import Mosquitto
from gossiprec.sim.compose import NETWORK
from gossiprec.sim.dataset import Dataset
from tests.daemonnet import Daemon, alive_peers, wait_for
from tests.stagetools import model_spread

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

NODES = 4


@pytest.fixture
def project(tmp_path: Path, ml100k: Dataset) -> Path:
    out = tmp_path / "cluster"
    assert main(["sim", "docker", "--nodes", str(NODES), "--out", str(out)]) == 0
    return out


def test_the_compose_file_passes_a_compose_spec_parser(project: Path) -> None:
    # compose_spec (Rust, the parser behind podlet) refuses what `docker compose` refuses:
    # unknown keys, wrong types, malformed durations and volumes.
    parsed = PyCompose.from_yaml((project / "compose.yaml").read_text())
    parsed.validate()
    services = parsed.to_dict()["services"]
    assert sorted(services) == ["broker"] + [f"node{i:02d}" for i in range(NODES)]
    node = services["node00"]
    assert node["healthcheck"]["test"][1:4] == ["gossiprec", "status", "--healthcheck"]
    assert not node["user"].startswith("0:"), "containers never run as root"
    assert any(str(v).endswith(":/identity:ro") or v.get("read_only") for v in node["volumes"])
    assert (project / "build" / "docker" / "Dockerfile").exists()
    dockerfile = (project / "build" / "docker" / "Dockerfile").read_text()
    assert "USER gossiprec" in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile


def _host_path(project: Path, service: dict[str, Any], container_path: str) -> str:
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if container_path.startswith(target):
            return str(project / source) + container_path[len(target) :]
    return container_path


def _broker_config(project: Path) -> str:
    lines = (project / "broker" / "mosquitto.conf").read_text().splitlines()
    kept = [line for line in lines if line.split(" ")[0] in ("allow_anonymous", "password_file",
                                                             "acl_file")]  # fmt: skip
    return "\n".join(kept).replace("/mosquitto/config", str(project / "broker")) + "\n"


def _daemon(project: Path, name: str, service: dict[str, Any], port: int) -> Daemon:
    """The service's command and environment, container paths mapped to the project folder."""
    command = service["command"]
    assert command[:3] == ["node", "run", "--config"]
    config = Path(_host_path(project, service, command[3]))
    env = {key: _host_path(project, service, value)
           for key, value in service["environment"].items()}  # fmt: skip
    env.update({"GOSSIPREC_NODE_DATA_DIR": _host_path(project, service, "/data"),
                "GOSSIPREC_NODE_IDENTITY_DIR": _host_path(project, service, "/identity"),
                "GOSSIPREC_NODE_IMPORT_CSV": _host_path(project, service, "/identity/shard.csv"),
                "GOSSIPREC_BROKER_URL": f"mqtt://127.0.0.1:{port}"})  # fmt: skip
    return Daemon(config, env, socket=Path(env["GOSSIPREC_NODE_DATA_DIR"]) / "control.sock")


async def _retained_presence(port: int, user: str, password: str) -> dict[str, bytes]:
    seen: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password) as client:
        await client.subscribe(topics.all_presence(NETWORK), qos=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    seen[str(message.topic)] = bytes(message.payload)
    return seen


async def _publish(port: int, user: str, password: str, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password) as client:
        await client.publish(topic, payload, qos=1, retain=True)


def test_generated_node_services_converge_behind_auth_and_acl(project: Path) -> None:
    services = yaml.safe_load((project / "compose.yaml").read_text())["services"]
    names = [f"node{i:02d}" for i in range(NODES)]
    with Mosquitto(extra_config=_broker_config(project)) as broker:
        daemons = [_daemon(project, n, services[n], broker.port) for n in names]
        for daemon in daemons:
            daemon.start()
        try:
            statuses = [d.wait_ready() for d in daemons]
            shards = [project / "nodes" / n / "identity" / "shard.csv" for n in names]
            expected = [len(shard.read_text().splitlines()) - 1 for shard in shards]
            assert wait_for(lambda: [d.ask("status")["interactions"] for d in daemons] == expected,
                            30), "every node imports its data shard at start"  # fmt: skip
            assert wait_for(lambda: all(alive_peers(d.ask("status")) == NODES - 1
                                        for d in daemons), 30)  # fmt: skip
            assert wait_for(lambda: all(d.ask("status")["updates_in"] >= 20 for d in daemons), 60)

            ids = [s["node_id"] for s in statuses]
            passwords = [(project / "nodes" / n / "identity" / "broker.password").read_text()
                         for n in names]  # fmt: skip
            forged = topics.presence(NETWORK, bytes.fromhex(ids[1]))
            asyncio.run(_publish(broker.port, names[0], passwords[0], forged, b"forged"))
            seen = asyncio.run(_retained_presence(broker.port, names[2], passwords[2]))
            assert seen[forged] not in (b"forged", b""), "node00 wrote into node01's presence"
            with pytest.raises(aiomqtt.MqttError):  # no login, no entry
                asyncio.run(_publish(broker.port, "", "", forged, b"anonymous"))
            with pytest.raises(aiomqtt.MqttError):
                asyncio.run(_publish(broker.port, names[0], "wrong", forged, b"guess"))
            assert all(d.ask("status")["rejected"].keys() <= {"envelope:unknown_sender"}
                       for d in daemons)  # fmt: skip
        finally:
            for daemon in daemons:
                daemon.stop()
    spread = model_spread([project / "nodes" / n / "data" for n in names])
    assert spread is not None and spread < 0.5, (
        f"node models did not converge: relative spread {spread:.3f}"
    )


def test_a_clustered_broker_project_spreads_nodes_and_bounds_what_each_login_writes(
    tmp_path: Path, ml100k: Dataset
) -> None:
    import json
    import re
    import tomllib

    out = tmp_path / "rabbit"
    assert main(["sim", "docker", "--nodes", "4", "--out", str(out), "--brokers", "3"]) == 0
    parsed = PyCompose.from_yaml((out / "compose.yaml").read_text())
    parsed.validate()
    services = parsed.to_dict()["services"]
    assert {"rabbitmq1", "rabbitmq2", "rabbitmq3"} <= services.keys() and "broker" not in services
    assert services["node01"]["depends_on"]["rabbitmq2"]["condition"] == "service_healthy", (
        "nodes start once every broker listens, so none fails over at boot"
    )
    firsts = []
    for index in range(4):
        node = tomllib.loads((out / "nodes" / f"node{index:02d}" / "identity" / "node.toml")
                             .read_text())  # fmt: skip
        urls = node["broker"]["urls"].split(",")
        assert len(urls) == 3 and node["broker"]["protocol"] == 4
        firsts.append(urls[0])
    assert firsts[:3] == [f"mqtt://rabbitmq{i}:1883" for i in (1, 2, 3)], "spread over the three"
    definitions = json.loads((out / "broker" / "definitions.json").read_text())
    permissions = {p["user"]: p["write"] for p in definitions["topic_permissions"]}
    ids = [p.name for p in (out / "nodes").iterdir()]
    assert sorted(permissions) == sorted([*ids, "authority"])

    def key(topic: str) -> str:  # how RabbitMQ names an MQTT topic's routing key
        return topic.replace("/", ".")

    node_id = load_node_id(out, "node00")
    other = load_node_id(out, "node01")
    own = permissions["node00"]
    assert re.match(own, key(topics.presence(NETWORK, node_id)))
    assert not re.match(own, key(topics.presence(NETWORK, other))), "no writing others' presence"
    assert re.match(own, key(topics.inbox(NETWORK, other)))
    assert re.match(permissions["authority"], key(topics.crl(NETWORK)))
    assert not re.match(permissions["authority"], key(topics.inbox(NETWORK, other)))


def load_node_id(project: Path, name: str) -> bytes:
    from gossiprec.crypto.keys import NodeKeys

    return NodeKeys.load(project / "nodes" / name / "identity").node_id
