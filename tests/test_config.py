from __future__ import annotations

from pathlib import Path

import pytest
from gossiprec.node.config import load_config
from gossiprec.node.errors import ConfigError

MINIMAL = '[node]\ndata_dir = "/var/lib/gossiprec"\n[model]\nn_items = 1682\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults_fill_everything_but_the_required_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.data_dir == Path("/var/lib/gossiprec")
    assert config.model.n_items == 1682
    assert config.broker.url == "mqtt://127.0.0.1:1883"
    assert config.control_socket == Path("/var/lib/gossiprec/control.sock")


def test_environment_overrides_the_file_and_secrets_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {
        "GOSSIPREC_BROKER_URL": "mqtt://broker:1884",
        "GOSSIPREC_GOSSIP_FANOUT": "3",
        "GOSSIPREC_BROKER_PASSWORD_FILE": str(secret),
        "GOSSIPREC_LOG_JSON": "yes",
    }
    config = load_config(write(tmp_path, MINIMAL + '[broker]\nurl = "mqtt://x:1"\n'), environ=env)
    assert (config.broker.url, config.gossip.fanout, config.log.json) == (
        "mqtt://broker:1884",
        3,
        True,
    )
    assert config.broker.password == "s3cret"
    assert "s3cret" not in repr(config)


def test_containers_can_configure_by_environment_alone() -> None:
    env = {"GOSSIPREC_NODE_DATA_DIR": "/data", "GOSSIPREC_MODEL_N_ITEMS": "500"}
    assert load_config(None, environ=env).model.n_items == 500


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[node]\n", {}, r"node\.data_dir is required.*GOSSIPREC_NODE_DATA_DIR"),
        (MINIMAL + '[gossip]\ncodec = "zip"\n', {}, r"gossip\.codec = 'zip'.*must be one of"),
        (
            MINIMAL,
            {"GOSSIPREC_GOSSIP_PERIOD": "soon"},
            r"gossip\.period = 'soon' \(from environment variable GOSSIPREC_GOSSIP_PERIOD\)",
        ),
        (MINIMAL + "[gossip]\nfanout = 0\n", {}, r"gossip\.fanout = 0 .* must be > 0"),
        (MINIMAL + '[broker]\nurl = "http://x"\n', {}, r"broker\.url .* mqtt://HOST:PORT"),
        (MINIMAL + "[gossip]\nfanuot = 2\n", {}, r"unknown key gossip\.fanuot"),
        (MINIMAL + "[gossip]\nsuspect_after = 60.0\n", {}, r"suspect_after must be less"),
        ("[node\n", {}, r"not valid TOML"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text), environ=env)
    assert "Fix" in str(caught.value)
