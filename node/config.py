"""Node configuration: one frozen dataclass per node.toml section, each default written once.

A key `section.name` in node.toml is `GOSSIPREC_SECTION_NAME` in the environment; secrets can
also come from a file named by `GOSSIPREC_SECTION_NAME_FILE` (Docker and Kubernetes secrets).
Precedence: environment, then file, then default. Every section checks its values when it is
made, so a config built in code (a test, the simulation's template) is held to the same rules as
one read from a file; a bad value names the key, where it came from, and the fix.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from gossiprec.gossip.codec import CODECS
from gossiprec.gossip.protocol import STRATEGIES
from gossiprec.gossip.topics import MAX_SHARDS
from gossiprec.node.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")
ITEM_ID_MODES = ("catalogue", "hashed", "rows")  # node/catalogue.py
MODEL_KINDS = ("bpr", "hybrid", "content")
# L2 of nodes whose items take gossiped SGD steps, chosen on ML-100K validation with the one-user
# study (HR@10 0.694 after 60 rounds, 0.667 at 0.01); the centralized Adam model keeps its own.
GOSSIP_L2 = 0.005

Check = Callable[[Any], str | None]  # returns a problem, or None when the value is fine


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _between(low: float, high: float) -> Check:
    """Inside [low, high]: a value far outside any sane setting is a typo, not a wish."""
    return lambda value: None if low <= value <= high else f"must lie in {low:g}..{high:g}"


DAY = 86_400.0
MAX_SOCKET_PATH = 104  # bytes: macOS's limit (Linux allows 107)


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _port(value: Any) -> str | None:
    return None if 0 <= value < 65_536 else "must be 0..65535"


def _mqtt_version(value: Any) -> str | None:
    return None if value in (4, 5) else "must be 4 or 5"


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


def _mqtt_urls(value: Any) -> str | None:
    """Empty, or comma-separated mqtt://HOST:PORT addresses."""
    if not isinstance(value, str):
        return 'must be one string, e.g. "mqtt://a:1883,mqtt://b:1883"'
    for url in filter(None, (part.strip() for part in value.split(","))):
        if problem := _mqtt_url(url):
            return f"has {url!r}, which {problem}"
    return None


def setting(default: Any = None, check: Check | None = None, *, help: str = "",
            secret: bool = False, required: bool = False) -> Any:  # fmt: skip
    """A config key: its default, its rule, and the line `config show` prints about it."""
    metadata = {"check": check, "help": help, "secret": secret}
    if required:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class Section:
    """Validation shared by every section: each value obeys its rule, or ConfigError."""

    NAME: ClassVar[str]

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if problem := _problem(item, value):
                raise ConfigError(_invalid(f"{self.NAME}.{item.name}", item, value, problem))


@dataclass(frozen=True)
class NodeSettings(Section):
    NAME = "node"
    data_dir: Path = setting(required=True, help="keys, certificate, store, checkpoints")
    identity_dir: Path | None = setting(help="keys and certificate; default: node.data_dir")
    import_csv: Path | None = setting(help="user,item[,time] rows loaded at start (idempotent)")
    checkpoint_period: float = setting(60.0, _between(0.1, DAY), help="seconds between checkpoints")


@dataclass(frozen=True)
class BrokerSettings(Section):
    NAME = "broker"
    url: str = setting("mqtt://127.0.0.1:1883", _mqtt_url, help="the MQTT broker")
    urls: str = setting(
        "", _mqtt_urls, help="the brokers of one MQTT cluster, comma-separated, tried in turn "
        "(fail over); set, it replaces broker.url"
    )  # fmt: skip
    username: str = setting("", help="broker login; empty = anonymous")
    password: str = setting(
        "", secret=True, help="broker password (or GOSSIPREC_BROKER_PASSWORD_FILE)"
    )
    protocol: int = setting(5, _mqtt_version, help="4 = MQTT 3.1.1, 5 = MQTT 5")
    failback: float = setting(
        60.0, _between(0, DAY), help="seconds on a later broker of broker.urls before moving "
        "back to the first once it answers (0: stay)"
    )  # fmt: skip

    @property
    def addresses(self) -> list[str]:
        """The brokers in the order a node tries them."""
        listed = [part.strip() for part in self.urls.split(",") if part.strip()]
        return listed or [self.url]


@dataclass(frozen=True)
class GossipSettings(Section):
    NAME = "gossip"
    strategy: str = setting("pairwise", _one_of(STRATEGIES), help="how models are averaged")
    codec: str = setting("float16", _one_of(CODECS), help="how model updates are encoded")
    period: float = setting(2.0, _between(0.01, DAY), help="seconds between gossip rounds")
    fanout: int = setting(1, _between(1, 64), help="peers per gossip round")
    heartbeat: float = setting(5.0, _between(0.05, DAY), help="seconds between presence beacons")
    suspect_after: float = setting(15.0, _positive, help="seconds of silence: a peer is suspect")
    dead_after: float = setting(45.0, _positive, help="seconds of silence: a peer is dead")
    presence_shards: int = setting(1, _power_of_two, help="> 1: partial views; same on all")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.suspect_after >= self.dead_after:
            raise ConfigError(
                "gossip.suspect_after must be less than gossip.dead_after. Fix: "
                "lower gossip.suspect_after or raise gossip.dead_after."
            )


@dataclass(frozen=True)
class DefenceSettings(Section):
    """Bounds on what an admitted but compromised peer can do (gossip/defence.py)."""

    NAME = "defence"
    enabled: bool = setting(True, help="clip peers' differences; quarantine repeat offenders")
    radius: float = setting(3.0, _between(1.0, 1_000.0), help="clip radius, x recent differences")
    strike_at: float = setting(4.0, _between(1.01, 1e6), help="radii a strike's difference spans")
    quarantine_at: float = setting(
        4.0, _between(1.0, 1_000.0), help="strikes to quarantine a peer (half: rate-limited)"
    )
    quarantine_for: float = setting(300.0, _between(0.0, DAY), help="seconds a quarantine lasts")


ON_SPENT = ("stop", "warn")


@dataclass(frozen=True)
class PrivacySettings(Section):
    """User-level differential privacy of what the node shares (node/privacy.py)."""

    NAME = "privacy"
    enabled: bool = setting(False, help="clip each user's gradient per round, add Gaussian noise")
    epsilon: float = setting(8.0, _between(0.01, 1_000.0), help="the privacy budget (epsilon)")
    delta: float = setting(1e-5, _between(1e-12, 0.1), help="the budget's delta (< 1/users)")
    clip: float = setting(0.003, _positive, help="largest gradient one user adds in a round (L2)")
    lr: float = setting(20.0, _positive, help="SGD step of a private round (model.lr's schedule)")
    noise_multiplier: float = setting(
        0.0, _non_negative, help="noise std / clip; 0 = the least that spends epsilon in rounds"
    )
    rounds: int = setting(
        1_000, _between(1, 10_000_000), help="training rounds the budget is planned for"
    )
    on_spent: str = setting(
        "stop", _one_of(ON_SPENT), help="budget spent: stop training on users' data, or warn"
    )


@dataclass(frozen=True)
class ModelSettings(Section):
    NAME = "model"
    n_items: int = setting(
        check=_between(2, 10_000_000),
        required=True,
        help="rows of the shared item table: room for the catalogue (hashed ids: 8x it)",
    )
    item_ids: str = setting(
        "catalogue",
        _one_of(ITEM_ID_MODES),
        help="catalogue: ids the authority published (ca catalogue); hashed: any string ids "
        "hashed into rows; rows: ids are rows 0..n_items-1",
    )
    kind: str = setting(
        "bpr",
        _one_of(MODEL_KINDS),
        help="bpr: matrix factorization; hybrid: plus shared item-feature embeddings (cold "
        "items); content: feature embeddings only (no per-item vectors)",
    )
    feature_rows: int = setting(
        1_024,
        _between(1, 1_000_000),
        help="rows of the hashed feature table (kind = hybrid or content)",
    )
    dim: int = setting(32, _between(1, 1_024), help="embedding size; the same on every node")
    seed: int = setting(0, help="the same on every node: all start from one model")
    optimizer: str = setting("sgd", _one_of(OPTIMIZERS), help="optimizer of the shared items")
    lr: float = setting(
        160.0, _positive, help="item SGD step per batch of 1024 interactions (smaller step less)"
    )
    user_lr: float = setting(0.03, _positive, help="Adam on the private user embeddings")
    l2: float = setting(GOSSIP_L2, _non_negative, help="L2 penalty on the embeddings a step uses")
    lr_half_life: float = setting(
        0.0, _non_negative, help="model versions after which model.lr halves; 0 = constant"
    )
    clip: float = setting(0.05, _non_negative, help="largest item gradient norm per step; 0 = none")


@dataclass(frozen=True)
class TrainSettings(Section):
    NAME = "train"
    period: float = setting(1.0, _between(0.01, DAY), help="seconds between training rounds")
    epochs: int = setting(2, _between(1, 1_000), help="local epochs per training round")
    online_steps: int = setting(20, _between(1, 10_000), help="steps on a user's new interactions")


@dataclass(frozen=True)
class ControlSettings(Section):
    NAME = "control"
    socket: Path | None = setting(
        help="the control API's Unix socket; default: DATA_DIR/control.sock"
    )


@dataclass(frozen=True)
class MetricsSettings(Section):
    NAME = "metrics"
    port: int = setting(0, _port, help="Prometheus /metrics on 127.0.0.1; 0 = off")


@dataclass(frozen=True)
class LogSettings(Section):
    NAME = "log"
    json: bool = setting(False, help="JSON lines instead of text")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """The whole node.toml, one attribute per section, in the file's order."""

    node: NodeSettings
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    gossip: GossipSettings = field(default_factory=GossipSettings)
    defence: DefenceSettings = field(default_factory=DefenceSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    model: ModelSettings
    train: TrainSettings = field(default_factory=TrainSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        if self.privacy.enabled and self.model.kind != "bpr":
            raise ConfigError(
                f'privacy.enabled = true needs model.kind = "bpr" (got {self.model.kind!r}): '
                "differential privacy is not built for the feature models yet. Fix: set one of "
                "the two."
            )
        if len(os.fsencode(self.control_socket)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"control.socket = {str(self.control_socket)!r} is longer than the "
                f"{MAX_SOCKET_PATH} bytes a Unix socket path may have. Fix: set control.socket "
                "(GOSSIPREC_CONTROL_SOCKET) to a shorter path."
            )

    @classmethod
    def defaults(cls, data_dir: Path, n_items: int) -> NodeConfig:
        """Every default, for a node made in code (tests, the simulation)."""
        return cls(node=NodeSettings(data_dir), model=ModelSettings(n_items))

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def identity_dir(self) -> Path:
        return self.node.identity_dir or self.node.data_dir

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.node.data_dir / "control.sock"

    def changed(self, changes: Mapping[str, Any]) -> Self:
        """A copy with {"section.key": value} applied (CLI flags, tests); checked as usual."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            section, name = _split(key)
            sections.setdefault(section, {})[name] = value
        return replace(self, **{name: replace(getattr(self, name), **values)
                                for name, values in sections.items()})  # fmt: skip

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values by section (paths as text, secrets masked): for reports and JSON."""
        return {
            section: {key: _shown(item, getattr(getattr(self, section), key))
                      for key, item in _keys(type(getattr(self, section)))}
            for section in SECTIONS
        }  # fmt: skip


SECTIONS = tuple(item.name for item in fields(NodeConfig))


@dataclass(frozen=True)
class Value:
    """One key of the effective configuration and where its value came from."""

    key: str
    value: Any
    source: str  # "default", "FILE", "environment variable NAME" or "NAME_FILE"
    help: str


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    return _resolve(path, os.environ if environ is None else environ)[0]


def explain_config(path: Path | None, environ: Mapping[str, str] | None = None) -> list[Value]:
    """Every key with its effective value (secrets masked) and its source: `config show`."""
    config, sources = _resolve(path, os.environ if environ is None else environ)
    shown = config.as_dict()
    return [
        Value(f"{section}.{key}", shown[section][key], sources[f"{section}.{key}"],
              item.metadata.get("help", ""))
        for section in SECTIONS
        for key, item in _keys(type(getattr(config, section)))
    ]  # fmt: skip


TEMPLATE = """# gossiprec node configuration. Every key can be overridden by the environment:
# [section] key -> GOSSIPREC_SECTION_KEY (secrets also from GOSSIPREC_SECTION_KEY_FILE).
# `gossiprec config show --config THIS_FILE` lists every key, its value and where it came from.
[node]
data_dir = "{data_dir}"

[broker]
url = "{broker}"

[gossip]
strategy = "pairwise"
codec = "float16"

[model]
n_items = {n_items}
"""


def config_text(data_dir: Path, broker: str, n_items: int) -> str:
    """A new node.toml; the settings it leaves out take their defaults."""
    return TEMPLATE.format(data_dir=data_dir, broker=broker, n_items=n_items)


def default_of(key: str) -> Any:
    """A key's default, as its section declares it."""
    section, name = _split(key)
    return next(i.default for i in fields(_section_type(section)) if i.name == name)


def env_name(key: str) -> str:
    return "GOSSIPREC_" + key.replace(".", "_").upper()


# -- loading ---------------------------------------------------------------------------------------


def _resolve(path: Path | None, environ: Mapping[str, str]) -> tuple[NodeConfig, dict[str, str]]:
    table = _read_toml(path) if path is not None else {}
    _reject_unknown(table, path)
    sources: dict[str, str] = {}
    sections: dict[str, Section] = {}
    for section in SECTIONS:
        kind = _section_type(section)
        values: dict[str, Any] = {}
        for key, item in _keys(kind):
            full = f"{section}.{key}"
            raw, source = _lookup(full, item, table.get(section, {}).get(key), environ, path)
            if raw is None:
                if item.default is MISSING and item.default_factory is MISSING:  # required
                    raise ConfigError(
                        f"{full} is required. Fix: set it in node.toml ([{section}] {key} = ...) "
                        f"or the environment variable {env_name(full)}."
                    )
                sources[full] = "default"
                continue
            value = _convert(full, kind, raw, source)
            if problem := _problem(item, value):
                raise ConfigError(_invalid(full, item, value, f"(from {source}) {problem}"))
            values[key], sources[full] = value, source
        sections[section] = kind(**values)
    return NodeConfig(**sections), sources  # type: ignore[arg-type]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}. Fix: pass "
            "--config PATH to an existing node.toml."
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the syntax there.") from exc


def _reject_unknown(table: dict[str, Any], path: Path | None) -> None:
    known = {f"{s}.{k}" for s in SECTIONS for k, _ in _keys(_section_type(s))}
    for section, entries in table.items():
        if not isinstance(entries, dict):
            raise ConfigError(
                f"{path}: top-level key {section!r} must be a [section]. Fix: "
                f"use one of the sections {', '.join(SECTIONS)}."
            )
        for name in entries:
            if f"{section}.{name}" not in known:
                raise ConfigError(
                    f"{path}: unknown key {section}.{name}. Fix: remove it; "
                    f"known keys: {', '.join(sorted(known))}."
                )


def _lookup(key: str, item: Field[Any], from_file: Any, environ: Mapping[str, str],
            path: Path | None) -> tuple[Any, str]:  # fmt: skip
    name = env_name(key)
    if name in environ:
        return environ[name], f"environment variable {name}"
    if item.metadata.get("secret") and f"{name}_FILE" in environ:
        secret_path = Path(environ[f"{name}_FILE"])
        try:
            return secret_path.read_text().strip(), f"{name}_FILE"
        except OSError as exc:
            raise ConfigError(
                f"{key}: cannot read {secret_path} named by {name}_FILE ({exc.strerror}). "
                "Fix: point it at a readable file."
            ) from exc
    return from_file, str(path)


def _convert(key: str, section: type[Section], raw: Any, source: str) -> Any:
    item = next(i for i in fields(section) if i.name == key.partition(".")[2])
    kind = _value_type(section, item.name)
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else _boolean(str(raw))
        if isinstance(raw, bool):
            raise ValueError("a boolean is not a number or text")
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return value
        if kind is int and isinstance(raw, float):
            raise ValueError("not an integer")
        if kind is str and not isinstance(raw, str):
            raise ValueError("not text")
        return kind(raw)
    except (TypeError, ValueError):
        shown = "***" if item.metadata.get("secret") else repr(raw)
        raise ConfigError(
            f"{key} = {shown} (from {source}) is not a valid {kind.__name__}. "
            f"Fix: give a {kind.__name__} in node.toml or {env_name(key)}."
        ) from None


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _problem(item: Field[Any], value: Any) -> str | None:
    check: Check | None = item.metadata.get("check")
    return check(value) if check is not None and value is not None else None


def _invalid(key: str, item: Field[Any], value: Any, problem: str) -> str:
    shown = "***" if item.metadata.get("secret") else repr(value)
    return f"{key} = {shown} {problem}. Fix: change {key} in node.toml or {env_name(key)}."


def _shown(item: Field[Any], value: Any) -> Any:
    if item.metadata.get("secret"):
        return "***" if value else ""
    return str(value) if isinstance(value, Path) else value


def _keys(kind: type) -> Iterator[tuple[str, Field[Any]]]:
    for item in fields(kind):
        yield item.name, item


def _section_type(section: str) -> type[Section]:
    kind: type[Section] = typing.get_type_hints(NodeConfig)[section]
    return kind


def _value_type(section: type[Section], name: str) -> type:
    """The concrete type of a key (`Path | None` is Path)."""
    kind = typing.get_type_hints(section)[name]
    if isinstance(kind, UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if not isinstance(kind, type):
        raise TypeError(f"unsupported config type {kind!r}")
    return kind


def _split(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    if section not in SECTIONS or name not in {k for k, _ in _keys(_section_type(section))}:
        raise ConfigError(f"unknown key {key}. Fix: use one of the keys `config show` lists.")
    return section, name
