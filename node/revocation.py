"""Publishing the network's revocation list (and catalogue): retained on its topic, QoS 1.

Every node subscribes to that topic, adopts a newer validly signed list at once, keeps it on
disk across restarts, and a node that finds itself on it stops gossiping. The broker only
relays the list: a forged or older one is refused by every node.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiomqtt

from gossiprec.crypto.catalogue import SignedCatalogue
from gossiprec.crypto.certificate import RevocationList
from gossiprec.gossip import topics
from gossiprec.node.errors import NodeError

PUBLISH_TIMEOUT = 10.0


class PublishError(NodeError):
    """The broker could not be reached or refused the authority's login."""


async def publish_crl(crl: RevocationList, broker_url: str, username: str | None = None,
                      password: str | None = None) -> str:  # fmt: skip
    """Publish `crl` retained with QoS 1 on its network's crl topic; returns the topic."""
    return await publish_retained(topics.crl(crl.network), crl.encode(), "the revocation list",
                                  broker_url, username, password)  # fmt: skip


async def publish_catalogue(catalogue: SignedCatalogue, broker_url: str,
                            username: str | None = None,
                            password: str | None = None) -> str:  # fmt: skip
    """Publish `catalogue` retained with QoS 1 on its network's catalogue topic."""
    return await publish_retained(topics.catalogue(catalogue.network), catalogue.encode(),
                                  "the catalogue", broker_url, username, password)  # fmt: skip


async def publish_retained(topic: str, payload: bytes, what: str, broker_url: str,
                           username: str | None, password: str | None) -> str:  # fmt: skip
    url = urlsplit(broker_url)
    if url.scheme != "mqtt" or not url.hostname:
        raise PublishError(f"--broker {broker_url!r} must look like mqtt://HOST:PORT")
    try:
        client = aiomqtt.Client(
            url.hostname, url.port or 1883, username=username, password=password,
            timeout=PUBLISH_TIMEOUT,
        )  # fmt: skip
        async with client:
            await client.publish(topic, payload, qos=1, retain=True, timeout=PUBLISH_TIMEOUT)
    except aiomqtt.MqttError as error:
        raise PublishError(
            f"could not publish {what} to {broker_url} ({error}). Fix: check the broker "
            "address and the authority's login (--username, --password-file)."
        ) from error
    return topic
