"""`gossiprec keys …` and `gossiprec ca …`: node identities and the network authority."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

from gossiprec.cli.output import Commands, emit_json, help_handler
from gossiprec.crypto.authority import CA_PUBLIC_FILE, Authority
from gossiprec.crypto.keys import PUBLIC_FILE, SIGNING_FILE, NodeKeys
from gossiprec.node.catalogue import check_item_id
from gossiprec.node.errors import IdentityError
from gossiprec.node.features import item_feature_names
from gossiprec.node.identity import issue_certificate
from gossiprec.node.items_file import ITEMS_BATCH, read_items


def register(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="create or rotate this node's keys")
    keys_sub = keys.add_subparsers(title="keys commands", metavar="COMMAND")
    init = keys_sub.add_parser(
        "init",
        help="create a node identity (Ed25519 + X25519 keys, mode 0600)",
        description="Writes signing.key and encryption.key (mode 0600) and node.pub.json, "
        "the public half to hand to the network authority (`gossiprec ca issue`).",
    )
    init.add_argument("--dir", type=Path, required=True, help="node data directory")
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=keys_init)
    rotate = keys_sub.add_parser(
        "rotate",
        help="new encryption key; the old one keeps working until retired",
        description="Messages sealed to the previous key still open, so peers holding the old "
        "certificate keep working while the authority issues a new one.",
    )
    rotate.add_argument("--dir", type=Path, required=True)
    rotate.add_argument("--retire", action="store_true", help="drop the previous key instead")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=keys_rotate)

    ca = commands.add_parser("ca", help="the network authority (offline CA)")
    ca_sub = ca.add_subparsers(title="ca commands", metavar="COMMAND")
    ca_init = ca_sub.add_parser("init", help="create a network authority")
    ca_init.add_argument("--dir", type=Path, required=True, help="authority folder (keep offline)")
    ca_init.add_argument("--network", required=True, help="network name, e.g. shops-eu")
    ca_init.add_argument("--json", action="store_true")
    ca_init.set_defaults(handler=ca_init_command)
    issue = ca_sub.add_parser(
        "issue",
        help="certify a node's public keys",
        description="Reads NODE_DIR/node.pub.json; writes NODE_DIR/node.cert and the network's "
        "trust anchor (network.json) and revocation list.",
    )
    issue.add_argument("--dir", type=Path, required=True, help="authority folder")
    issue.add_argument("--node-dir", type=Path, required=True)
    issue.add_argument("--days", type=float, default=365.0, help="validity (default 365)")
    issue.add_argument("--json", action="store_true")
    issue.set_defaults(handler=ca_issue)
    revoke = ca_sub.add_parser("revoke", help="revoke certificates; bumps the list version")
    revoke.add_argument("--dir", type=Path, required=True, help="authority folder")
    who = revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("--serial", type=int, action="append", help="certificate serial")
    who.add_argument("--node-id", help="revoke every certificate of this node id (hex)")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(handler=ca_revoke)
    publish = ca_sub.add_parser(
        "publish",
        help="send the revocation list to the network (retained, QoS 1)",
        description="Publishes DIR/crl.bin on the network's crl topic, retained, so every node "
        "adopts it now and every node that connects later gets it. Nodes keep the newest list "
        "they adopted on disk; a revoked node stops gossiping. Run after every `ca revoke`.",
    )
    publish.add_argument("--dir", type=Path, required=True, help="authority folder")
    publish.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    publish.add_argument("--username", help="the authority's broker login, if the broker asks")
    publish.add_argument("--password-file", type=Path, help="a file holding that login's password")
    publish.add_argument("--json", action="store_true")
    publish.set_defaults(handler=ca_publish)
    catalogue = ca_sub.add_parser(
        "catalogue",
        help="add items to the network's signed catalogue; with --broker, send it to every node",
        description="Adds the entries of --items (CSV with a header naming id and the fields, "
        "or JSON lines) to DIR/catalogue.bin as its next version, signed by the authority, and "
        "with --broker publishes it retained: every running node adopts it at once (new ids "
        "become recommendable; with model.kind = hybrid their features place them before "
        "anyone touches them), and nodes that connect later get it too.",
    )
    catalogue.add_argument("--dir", type=Path, required=True, help="authority folder")
    catalogue.add_argument("--items", type=Path, help="entries to add or update")
    catalogue.add_argument("--broker", help="mqtt://HOST:PORT: publish the catalogue there")
    catalogue.add_argument("--username", help="the authority's broker login, if the broker asks")
    catalogue.add_argument("--password-file", type=Path, help="a file holding that password")
    catalogue.add_argument("--json", action="store_true")
    catalogue.set_defaults(handler=ca_catalogue)
    keys.set_defaults(handler=help_handler(keys))
    ca.set_defaults(handler=help_handler(ca))


def _report(args: argparse.Namespace, data: Mapping[str, object], text: str) -> int:
    if args.json:
        emit_json(data)
    else:
        print(text)
    return 0


def keys_init(args: argparse.Namespace) -> int:
    if (args.dir / SIGNING_FILE).exists():
        raise IdentityError(
            f"{args.dir / SIGNING_FILE} already exists. Fix: pick another --dir; a node keeps "
            "its identity (use `gossiprec keys rotate` for a new encryption key)."
        )
    keys = NodeKeys.generate()
    keys.save(args.dir)
    record = keys.public_record()
    return _report(
        args,
        {**record, "public_file": str(args.dir / PUBLIC_FILE)},
        f"node {record['node_id']} created in {args.dir}\n"
        f"next: gossiprec ca issue --dir CA_DIR --node-dir {args.dir}",
    )


def keys_rotate(args: argparse.Namespace) -> int:
    keys = NodeKeys.load(args.dir)
    keys = keys.retired() if args.retire else keys.rotated()
    keys.save(args.dir)
    action = "retired the previous" if args.retire else "rotated the"
    return _report(
        args,
        keys.public_record(),
        f"{action} encryption key of node {keys.node_id.hex()}; "
        "ask the authority for a new certificate (gossiprec ca issue)",
    )


def ca_init_command(args: argparse.Namespace) -> int:
    authority = Authority.create(args.dir, args.network)
    return _report(
        args,
        {"network": authority.network, "ca_public": authority.public.hex()},
        f"authority for network {authority.network!r} created in {args.dir}; "
        f"give nodes {args.dir / CA_PUBLIC_FILE}, keep ca.key offline",
    )


def ca_issue(args: argparse.Namespace) -> int:
    cert = issue_certificate(Authority.load(args.dir), args.node_dir, args.days)
    return _report(
        args,
        {
            "node_id": cert.node_id.hex(),
            "serial": cert.serial,
            "not_after": cert.not_after,
            "network": cert.network,
        },
        f"issued certificate {cert.serial} for node {cert.node_id.hex()} "
        f"(network {cert.network!r}, {args.days:g} days) into {args.node_dir}",
    )


def ca_revoke(args: argparse.Namespace) -> int:
    authority = Authority.load(args.dir)
    serials = set(args.serial or []) or authority.serial_of(args.node_id)
    if not serials:
        raise IdentityError(f"no certificate was issued to node {args.node_id}")
    crl = authority.revoke(serials, int(time.time()))
    return _report(
        args,
        {"version": crl.version, "revoked": sorted(crl.revoked)},
        f"revocation list version {crl.version}: {len(crl.revoked)} revoked "
        f"(newly {sorted(serials)}). Next: gossiprec ca publish --dir {args.dir} "
        "--broker mqtt://HOST:PORT",
    )


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is None:
        return None
    try:
        return str(args.password_file.read_text().strip())
    except OSError as error:
        raise IdentityError(f"cannot read --password-file: {error.strerror}") from error


def ca_catalogue(args: argparse.Namespace) -> int:
    from gossiprec.node.revocation import publish_catalogue  # aiomqtt: only when publishing

    authority = Authority.load(args.dir)
    catalogue = authority.catalogue()
    if args.items is not None:
        entries = [(check_item_id(entry["id"]), tuple(item_feature_names(entry)))
                   for batch in read_items(args.items, ITEMS_BATCH) for entry in batch]  # fmt: skip
        catalogue = authority.add_to_catalogue(entries, int(time.time()))
    topic = None
    if args.broker:
        topic = asyncio.run(publish_catalogue(catalogue, args.broker, args.username,
                                              _password(args)))  # fmt: skip
    sent = f", published retained on {topic}" if topic else ""
    return _report(
        args,
        {"version": catalogue.version, "items": len(catalogue.entries), "topic": topic},
        f"catalogue version {catalogue.version}: {len(catalogue.entries)} items{sent}",
    )


def ca_publish(args: argparse.Namespace) -> int:
    from gossiprec.node.revocation import publish_crl  # aiomqtt: only this command needs it

    crl = Authority.load(args.dir).revocation_list()
    topic = asyncio.run(publish_crl(crl, args.broker, args.username, _password(args)))
    return _report(
        args,
        {"version": crl.version, "revoked": sorted(crl.revoked), "topic": topic},
        f"published revocation list version {crl.version} ({len(crl.revoked)} revoked) "
        f"retained on {topic}",
    )
