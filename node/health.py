"""Is a node healthy? What `gossiprec status --healthcheck` (a container's healthcheck) asks."""

from __future__ import annotations

from typing import Any

# A broker restart takes a node a few seconds to get over (0.9-3.1 s measured); a link down for
# longer than this is an outage worth a red healthcheck.
DEFAULT_GRACE = 30.0


def problems(status: dict[str, Any], grace: float = DEFAULT_GRACE) -> list[str]:
    """Why the node whose `status` this is is unhealthy; empty when it is healthy."""
    found = []
    broker = status["broker"]
    if not broker["connected"] and broker["down_for"] > grace:
        reason = f": {broker['last_error']}" if broker["last_error"] else ""
        found.append(f"broker link down for {broker['down_for']:.0f} s{reason}")
    if status["revoked"]:
        found.append("this node's certificate is revoked: it no longer gossips")
    if error := status["checkpoints"]["last_error"]:  # the latest checkpoint failed
        found.append(f"checkpoints failing: {error}")
    return found
