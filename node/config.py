"""Node configuration: a TOML file, every key overridable by environment for containers.

A key `section.name` in node.toml is `GOSSIPREC_SECTION_NAME` in the environment; secrets can
also come from a file named by `GOSSIPREC_SECTION_NAME_FILE` (Docker and Kubernetes secrets).
Precedence: environment, then file, then default. A bad value stops start-up with a message that
names the key and how to fix it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gossip.codec import CODECS
from gossip.protocol import STRATEGIES
from gossip.topics import MAX_SHARDS
from node.recommender import GOSSIP_L2, OPTIMIZERS


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key and the fix."""


Check = Callable[[Any], str | None]  # returns a problem, or None when the value is fine


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _power_of_two(value: Any) -> str | None:
    if 1 <= value <= MAX_SHARDS and value & (value - 1) == 0:
        return None
    return f"must be a power of two in 1..{MAX_SHARDS}"


def _mqtt_url(value: Any) -> str | None:
    parts = urlsplit(value)
    if parts.scheme != "mqtt" or not parts.hostname:
        return "must look like mqtt://HOST:PORT"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has an invalid port"
    return None


@dataclass(frozen=True)
class Field:
    key: str  # "section.name"
    kind: type
    default: Any
    check: Check | None = None
    secret: bool = False
    required: bool = False
    help: str = ""

    @property
    def env(self) -> str:
        return "GOSSIPREC_" + self.key.replace(".", "_").upper()


FIELDS = (
    Field("node.data_dir", Path, None, required=True, help="keys, certificate, store, checkpoints"),
    Field("node.identity_dir", Path, None, help="keys and certificate; default: node.data_dir"),
    Field("node.import_csv", Path, None, help="user,item[,time] rows loaded at start (idempotent)"),
    Field("node.checkpoint_period", float, 60.0, _positive, help="seconds between checkpoints"),
    Field("broker.url", str, "mqtt://127.0.0.1:1883", _mqtt_url),
    Field("broker.username", str, ""),
    Field("broker.password", str, "", secret=True),
    Field("broker.protocol", int, 5, lambda v: None if v in (4, 5) else "must be 4 or 5"),
    Field("gossip.strategy", str, "pairwise", _one_of(STRATEGIES)),
    Field("gossip.codec", str, "float16", _one_of(CODECS)),
    Field("gossip.period", float, 2.0, _positive, help="seconds between gossip rounds"),
    Field("gossip.fanout", int, 1, _positive),
    Field("gossip.heartbeat", float, 5.0, _positive),
    Field("gossip.suspect_after", float, 15.0, _positive),
    Field("gossip.dead_after", float, 45.0, _positive),
    Field("gossip.presence_shards", int, 1, _power_of_two, help="> 1: partial views; same on all"),
    Field("model.n_items", int, None, _positive, required=True, help="shared item catalogue size"),
    Field("model.dim", int, 32, _positive),
    Field("model.seed", int, 0, help="the same on every node: all start from one model"),
    Field("model.optimizer", str, "sgd", _one_of(OPTIMIZERS)),
    Field(
        "model.lr",
        float,
        160.0,
        _positive,
        help="item SGD step per batch of 1024 interactions (smaller batches step less)",
    ),
    Field("model.user_lr", float, 0.03, _positive, help="Adam on the private user embeddings"),
    Field(
        "model.l2", float, GOSSIP_L2, _non_negative, help="L2 penalty on the embeddings a step uses"
    ),
    Field(
        "model.lr_half_life",
        float,
        0.0,
        _non_negative,
        help="model versions (merges along a lineage) after which model.lr halves; 0 = constant",
    ),
    Field(
        "model.clip",
        float,
        0.05,
        _non_negative,
        help="largest item gradient norm per step (0 = no limit)",
    ),
    Field("train.period", float, 1.0, _positive, help="seconds between training rounds"),
    Field("train.epochs", int, 2, _positive, help="local epochs per training round"),
    Field("train.online_steps", int, 20, _positive, help="steps on a user's new interactions"),
    Field("control.socket", Path, None, help="default: DATA_DIR/control.sock"),
    Field("metrics.port", int, 0, lambda v: None if 0 <= v < 65_536 else "must be 0..65535"),
    Field("log.json", bool, False),
)


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    node_identity_dir: Path
    node_import_csv: Path | None
    node_checkpoint_period: float
    broker_url: str
    broker_username: str
    broker_password: str
    broker_protocol: int
    gossip_strategy: str
    gossip_codec: str
    gossip_period: float
    gossip_fanout: int
    gossip_heartbeat: float
    gossip_suspect_after: float
    gossip_dead_after: float
    gossip_presence_shards: int
    model_n_items: int
    model_dim: int
    model_seed: int
    model_optimizer: str
    model_lr: float
    model_user_lr: float
    model_l2: float
    model_lr_half_life: float
    model_clip: float
    train_period: float
    train_epochs: int
    train_online_steps: int
    control_socket: Path
    metrics_port: int
    log_json: bool

    def __repr__(self) -> str:  # never print the broker password
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "broker_password"}
        return f"NodeConfig({shown}, broker_password={'***' if self.broker_password else ''})"


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    environ = os.environ if environ is None else environ
    table: dict[str, Any] = {}
    if path is not None:
        try:
            table = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {path}: {exc.strerror}. Fix: pass "
                "--config PATH to an existing node.toml."
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the syntax there.") from exc
    _reject_unknown(table, path)
    values: dict[str, Any] = {}
    for field in FIELDS:
        section, name = field.key.split(".")
        raw, source = _lookup(field, table.get(section, {}).get(name), environ)
        values[field.key.replace(".", "_")] = _convert(field, raw, source)
    if values["gossip_suspect_after"] >= values["gossip_dead_after"]:
        raise ConfigError(
            "gossip.suspect_after must be less than gossip.dead_after. Fix: "
            "lower gossip.suspect_after or raise gossip.dead_after."
        )
    if values["node_identity_dir"] is None:
        values["node_identity_dir"] = values["node_data_dir"]
    if values["control_socket"] is None:
        values["control_socket"] = values["node_data_dir"] / "control.sock"
    values["data_dir"] = values.pop("node_data_dir")
    return NodeConfig(**values)


def _reject_unknown(table: dict[str, Any], path: Path | None) -> None:
    known = {f.key for f in FIELDS}
    for section, entries in table.items():
        if not isinstance(entries, dict):
            raise ConfigError(
                f"{path}: top-level key {section!r} must be a [section]. Fix: "
                f"use one of the sections {sorted({k.split('.')[0] for k in known})}."
            )
        for name in entries:
            if f"{section}.{name}" not in known:
                raise ConfigError(
                    f"{path}: unknown key {section}.{name}. Fix: remove it; "
                    f"known keys: {', '.join(sorted(known))}."
                )


def _lookup(field: Field, from_file: Any, environ: Mapping[str, str]) -> tuple[Any, str]:
    if field.env in environ:
        return environ[field.env], f"environment variable {field.env}"
    if field.secret and f"{field.env}_FILE" in environ:
        secret_path = Path(environ[f"{field.env}_FILE"])
        try:
            return secret_path.read_text().strip(), f"{field.env}_FILE"
        except OSError as exc:
            raise ConfigError(
                f"{field.key}: cannot read {secret_path} named by "
                f"{field.env}_FILE ({exc.strerror}). Fix: point it at a readable "
                "file."
            ) from exc
    return from_file, f"{field.key} in the config file"


def _convert(field: Field, raw: Any, source: str) -> Any:
    if raw is None:
        if field.required:
            raise ConfigError(
                f"{field.key} is required. Fix: set it in node.toml "
                f"([{field.key.split('.')[0]}] {field.key.split('.')[1]} = ...) "
                f"or the environment variable {field.env}."
            )
        return field.default
    try:
        if field.kind is bool:
            value: Any = raw if isinstance(raw, bool) else _boolean(str(raw))
        elif field.kind in (int, float) and isinstance(raw, bool):
            raise ValueError("a boolean is not a number")
        else:
            value = field.kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{field.key} = {raw!r} (from {source}) is not a valid "
            f"{field.kind.__name__}. Fix: give a {field.kind.__name__}."
        ) from None
    problem = field.check(value) if field.check else None
    if problem:
        shown = "***" if field.secret else repr(value)
        raise ConfigError(
            f"{field.key} = {shown} (from {source}) {problem}. Fix: change "
            f"{field.key} in node.toml or {field.env}."
        )
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def config_for(data_dir: Path, n_items: int, **overrides: Any) -> NodeConfig:
    """Defaults for a node made in code (tests, the simulation): no file, no environment."""
    environ = {"GOSSIPREC_NODE_DATA_DIR": str(data_dir), "GOSSIPREC_MODEL_N_ITEMS": str(n_items)}
    return replace(load_config(None, environ=environ), **overrides)
