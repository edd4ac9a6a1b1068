from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gossiprec.cli import config as cli_config
from gossiprec.cli.main import main
from gossiprec.node.control import ControlServer
from gossiprec.node.errors import StoreError
from gossiprec.node.interactions_csv import INGEST_BATCH


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossiprec.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [[], ["baseline"], ["data"], ["data", "fetch"], ["config", "show"], ["sim"], ["node", "run"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: gossiprec" in result.stdout


def test_missing_dataset_exits_2_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["baseline", "--data", str(tmp_path / "absent")])
    assert code == 2
    assert "gossiprec data fetch ml-100k" in capsys.readouterr().err


def test_baseline_json_on_synthetic_data_lists_the_three_references(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In this process: on a busy machine the training takes minutes, and nothing here should
    # give up on it before it is done.
    assert main(["baseline", "--dataset", "synthetic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in report["results"]]
    assert names == ["centralized BPR-MF", "local-only BPR-MF", "popularity"]
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["centralized BPR-MF"]["hr10"] > by_name["popularity"]["hr10"]
    assert by_name["popularity"]["hr10"] > by_name["local-only BPR-MF"]["hr10"]


def test_exit_codes_tell_unreachable_from_refused_from_internal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No node on the socket: 1, so `gossiprec status` works as a healthcheck.
    assert main(["status", "--socket", str(tmp_path / "none.sock"), "--timeout", "1"]) == 1
    assert "no node answers" in capsys.readouterr().err
    # A request that cannot be done as asked: 2 and the fix.
    assert main(["config", "show", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "Fix: pass --config PATH" in capsys.readouterr().err
    # A bug: 70, and the traceback goes to the log, not to the user as if it were their fault.
    monkeypatch.setattr(cli_config, "explain_config", lambda _path: 1 / 0)
    assert main(["config", "show"]) == 70
    assert "internal error" in capsys.readouterr().err


def test_config_show_prints_every_key_with_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\ndata_dir = "/data"\n[model]\nn_items = 7\n')
    monkeypatch.setenv("GOSSIPREC_TRAIN_EPOCHS", "5")
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    shown = {v["key"]: v for v in json.loads(capsys.readouterr().out)}
    assert shown["model.n_items"] == {"key": "model.n_items", "value": 7, "source": str(path),
                                      "help": "rows of the shared item table: room for the "
                                              "catalogue (hashed ids: 8x it)"}  # fmt: skip
    assert shown["train.epochs"]["source"] == "environment variable GOSSIPREC_TRAIN_EPOCHS"
    assert shown["train.epochs"]["value"] == 5
    assert main(["config", "show", "--config", str(path)]) == 0
    assert "train.epochs" in capsys.readouterr().out


def test_status_without_a_config_asks_which_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOSSIPREC_NODE_DATA_DIR", raising=False)
    monkeypatch.delenv("GOSSIPREC_CONTROL_SOCKET", raising=False)
    assert main(["status"]) == 2
    assert "pass --config node.toml or --socket PATH" in capsys.readouterr().err


def test_an_interrupted_csv_ingest_says_what_was_stored_and_that_rerunning_is_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batches: list[int] = []

    async def ingest(request: dict[str, Any]) -> dict[str, Any]:
        if batches:  # the second batch: the node refuses (its disk is full, say)
            raise StoreError("could not store interactions (database or disk is full)")
        batches.append(len(request["rows"]))
        return {"received": len(request["rows"]), "added": len(request["rows"]),
                "interactions": len(request["rows"])}  # fmt: skip

    csv = tmp_path / "clicks.csv"
    csv.write_text("user,item\n" + "".join(f"{u},{u % 50}\n" for u in range(INGEST_BATCH + 10)))
    socket = tmp_path / "s.sock"

    async def run() -> int:
        async with ControlServer(socket, {"ingest": ingest}):
            return await asyncio.to_thread(main, ["ingest", "--socket", str(socket),
                                                  "--csv", str(csv)])  # fmt: skip

    assert asyncio.run(run()) == 2
    err = capsys.readouterr().err
    assert "database or disk is full" in err
    assert f"{INGEST_BATCH} rows were stored before this" in err
    assert "running the same command again is safe" in err


def test_an_empty_csv_says_so_and_asks_nothing_of_the_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("user,item\n")
    assert main(["ingest", "--socket", str(tmp_path / "none.sock"), "--csv", str(empty)]) == 0
    assert "holds no interactions" in capsys.readouterr().out
