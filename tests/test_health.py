"""What makes `gossiprec status --healthcheck` fail, and the transport's reconnect jitter."""

from __future__ import annotations

import random
from typing import Any

from gossiprec.gossip.mqtt import MqttConfig, MqttTransport
from gossiprec.node.health import problems


def status(**changes: Any) -> dict[str, Any]:
    healthy: dict[str, Any] = {
        "broker": {"connected": True, "down_for": 0.0, "last_error": ""},
        "revoked": False,
        "checkpoints": {"last_error": None},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            healthy[section] = {**healthy[section], name: value}
        else:
            healthy[section] = value
    return healthy


def test_a_node_is_healthy_until_its_link_is_down_past_the_grace_period() -> None:
    assert problems(status()) == []
    down = status(broker__connected=False, broker__down_for=12.0,
                  broker__last_error="[code:134] Bad user name or password")  # fmt: skip
    assert problems(down, grace=30) == []  # a broker restart takes seconds
    assert problems(down, grace=10) == [
        "broker link down for 12 s: [code:134] Bad user name or password"
    ]


def test_revocation_and_failing_checkpoints_are_unhealthy() -> None:
    assert problems(status(revoked=True)) == [
        "this node's certificate is revoked: it no longer gossips"
    ]
    failing = status(checkpoints__last_error="No space left on device")
    assert problems(failing) == ["checkpoints failing: No space left on device"]


def test_reconnect_jitter_comes_from_the_os_unless_a_seed_is_asked_for() -> None:
    # Nodes sharing a seed would retry in lockstep against a recovering broker.
    unseeded = [MqttTransport(MqttConfig(), f"n{i}", []) for i in range(2)]
    assert all(isinstance(t._rng, random.SystemRandom) for t in unseeded)
    seeded = [MqttTransport(MqttConfig(), f"n{i}", [], seed=7) for i in range(2)]
    assert seeded[0]._rng.random() == seeded[1]._rng.random()
