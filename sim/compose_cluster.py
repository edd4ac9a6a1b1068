"""The clustered broker of `gossiprec sim docker --brokers K`: K RabbitMQ nodes with the MQTT
plugin, one cluster (classic-config peer discovery), one login per node.

RabbitMQ maps MQTT topics to routing keys of the `amq.topic` exchange ("/" becomes "."), and its
topic permissions are regular expressions over those keys: a node may write only its own
presence, into inboxes and the (signed) revocation list, as with mosquitto's ACL. Reads are open
to every login: inboxes are sealed to their recipient and presence is signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

from gossiprec.gossip import topics

RABBITMQ_IMAGE = "rabbitmq:3.10"  # any image with rabbitmq-server and its MQTT plugin (>= 3.8)
VHOST = "/"


def rabbitmq_password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _routing_key(topic: str) -> str:
    return re.escape(topic.replace("/", "."))


def write_permission(network: str, node_id: bytes | None) -> str:
    """The routing keys a login may publish to: its presence, inboxes, the revocation list (the
    authority, node_id None: the revocation list and the catalogue alone)."""
    crl = _routing_key(topics.crl(network))
    if node_id is None:
        return f"^({crl}|{_routing_key(topics.catalogue(network))})$"
    presence = _routing_key(topics.presence(network, node_id))
    inbox = _routing_key(topics.inbox(network, b"")) + "[0-9a-f]+"
    return f"^({presence}|{inbox}|{crl})$"


def broker_names(count: int) -> list[str]:
    return [f"rabbitmq{index + 1}" for index in range(count)]


def write_rabbitmq_cluster(folder: Path, count: int, logins: list[tuple[str, str, bytes | None]],
                           network: str) -> None:  # fmt: skip
    """rabbitmq.conf, enabled_plugins and definitions.json in `folder` for `count` nodes;
    `logins` are (user, password, node id or None for the authority)."""
    names = broker_names(count)
    config = [
        "cluster_formation.peer_discovery_backend = classic_config",
        *(f"cluster_formation.classic_config.nodes.{i} = rabbit@{name}"
          for i, name in enumerate(names, start=1)),
        "mqtt.listeners.tcp.default = 1883",
        "mqtt.allow_anonymous = false",
        f"mqtt.vhost = {VHOST}",
        "load_definitions = /etc/rabbitmq/definitions.json",
        "loopback_users = none",
    ]  # fmt: skip
    definitions: dict[str, Any] = {
        "vhosts": [{"name": VHOST}],
        "users": [{"name": user, "password_hash": rabbitmq_password_hash(password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                  for user, password, _ in logins],
        # MQTT subscriptions are queues the plugin declares per client: configure and read on
        # its own queues are needed; publishing goes through amq.topic, bounded below.
        "permissions": [{"user": user, "vhost": VHOST, "configure": ".*", "write": ".*",
                         "read": ".*"} for user, _, _ in logins],
        "topic_permissions": [{"user": user, "vhost": VHOST, "exchange": "amq.topic",
                               "write": write_permission(network, node_id), "read": ".*"}
                              for user, _, node_id in logins],
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rabbitmq.conf").write_text("\n".join(config) + "\n")
    (folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    (folder / "definitions.json").write_text(json.dumps(definitions, indent=1))


def rabbitmq_services(count: int, image: str, cookie: str) -> dict[str, dict[str, Any]]:
    services = {}
    for name in broker_names(count):
        services[name] = {
            "image": image,
            "hostname": name,
            # Every node of a cluster shares one Erlang cookie.
            "environment": {
                "RABBITMQ_NODENAME": f"rabbit@{name}",
                "RABBITMQ_ERLANG_COOKIE": cookie,
            },
            "volumes": [
                "./broker/rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro",
                "./broker/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro",
                "./broker/definitions.json:/etc/rabbitmq/definitions.json:ro",
            ],
            "command": ["rabbitmq-server"],
            "restart": "unless-stopped",
            # Healthy once the MQTT listener accepts connections (it opens after the node has
            # joined the cluster and loaded the logins): nodes start only then, so none fails
            # over at boot and the spread over the brokers holds. Bash alone, no Erlang VM.
            "healthcheck": {
                "test": ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1883"],
                "interval": "5s",
                "timeout": "5s",
                "retries": 60,
                "start_period": "30s",
            },
        }
    return services
