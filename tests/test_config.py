from __future__ import annotations

from pathlib import Path

import pytest

from gossiprec.node.config import GOSSIP_L2, NodeConfig, explain_config, load_config
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
        (MINIMAL + "[gossip]\nfanout = 0\n", {}, r"gossip\.fanout = 0 .* must lie in 1\.\.64"),
        (MINIMAL + '[broker]\nurl = "http://x"\n', {}, r"broker\.url .* mqtt://HOST:PORT"),
        (
            MINIMAL,
            {"GOSSIPREC_BROKER_URLS": "mqtt://a:1883,b:1883"},
            r"broker\.urls .* has 'b:1883', which must look like mqtt://HOST:PORT",
        ),
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


def test_sections_hold_their_keys_and_code_made_configs_obey_the_same_rules(
    tmp_path: Path,
) -> None:
    config = NodeConfig.defaults(tmp_path, 50)
    assert (config.gossip.period, config.train.period, config.model.l2) == (2.0, 1.0, GOSSIP_L2)
    assert config.identity_dir == tmp_path and config.control_socket == tmp_path / "control.sock"
    faster = config.changed({"gossip.period": 0.5, "model.lr": 10.0})
    assert (faster.gossip.period, faster.model.lr, faster.gossip.codec) == (0.5, 10.0, "float16")
    with pytest.raises(ConfigError, match=r"gossip\.fanout = 0 must lie in 1\.\.64\. Fix"):
        config.changed({"gossip.fanout": 0})
    with pytest.raises(ConfigError, match=r"unknown key gossip\.speed"):
        config.changed({"gossip.speed": 1})
    with pytest.raises(ConfigError, match="suspect_after must be less"):
        config.changed({"gossip.suspect_after": 60.0})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GOSSIPREC_GOSSIP_PERIOD": "inf"}, r"gossip\.period = 'inf' .* is not a valid float"),
        ({"GOSSIPREC_MODEL_N_ITEMS": "1.5"}, r"model\.n_items = '1\.5' .* is not a valid int"),
    ],
)
def test_values_that_are_not_finite_or_not_integral_are_refused(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL), environ=env)


def test_config_show_names_where_every_value_came_from(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    path = write(tmp_path, MINIMAL + "[gossip]\nfanout = 2\n")
    env = {"GOSSIPREC_GOSSIP_PERIOD": "0.5", "GOSSIPREC_BROKER_PASSWORD_FILE": str(secret)}
    values = {v.key: v for v in explain_config(path, environ=env)}
    assert len(values) == sum(
        len(section) for section in NodeConfig.defaults(tmp_path, 2).as_dict().values()
    )
    assert (values["gossip.fanout"].value, values["gossip.fanout"].source) == (2, str(path))
    assert values["gossip.period"].source == "environment variable GOSSIPREC_GOSSIP_PERIOD"
    assert (values["broker.password"].value, values["broker.password"].source) == (
        "***",
        "GOSSIPREC_BROKER_PASSWORD_FILE",
    )
    assert (values["model.dim"].value, values["model.dim"].source) == (32, "default")
    assert all(value.help for value in values.values())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GOSSIPREC_MODEL_N_ITEMS": "10000000000"},
            r"model\.n_items = 10000000000 .* 2\.\.1e\+07",
        ),
        ({"GOSSIPREC_MODEL_DIM": "100000"}, r"model\.dim = 100000 .* must lie in"),
        ({"GOSSIPREC_TRAIN_ONLINE_STEPS": "1000000000"}, r"train\.online_steps = 1000000000"),
        ({"GOSSIPREC_BROKER_USERNAME": "x", "GOSSIPREC_GOSSIP_PERIOD": "1e9"}, r"gossip\.period"),
        ({"GOSSIPREC_CONTROL_SOCKET": "/tmp/" + "s" * 200}, r"control\.socket .* longer than"),
    ],
)
def test_values_out_of_any_sane_range_are_refused_with_the_fix(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, MINIMAL), environ=env)
    assert "Fix" in str(caught.value)


def test_a_list_is_not_a_user_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broker\.username = \['a'\] .* not a valid str"):
        load_config(write(tmp_path, MINIMAL + "[broker]\nusername = ['a']\n"), environ={})
