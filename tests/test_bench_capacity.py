"""`gossiprec bench capacity`: arithmetic on measured broker rates, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gossiprec.cli.bench_capacity import SETTINGS, TARGET_VIEW, brokers_needed, capacity, view
from gossiprec.cli.main import main
from gossiprec.sim.simulation import presence_shards

MEASURED = {"raw_aiomqtt_msgs_per_s": 1_000.0, "raw_beacon_msgs_per_s": 2_000.0,
            "exchange_bytes_by_codec": {"float16": 200_000, "sparse-int8": 40_000}}  # fmt: skip


def test_model_bytes_and_beacons_follow_the_formulas() -> None:
    defaults = SETTINGS[0]
    row = next(r for r in capacity({"m": MEASURED})["rows"]
               if r["setting"] == defaults.label and r["devices"] == 1_000)  # fmt: skip
    assert row["model_mb_per_s"] == pytest.approx(1_000 * 200_000 / 2.0 / 1e6)
    assert row["beacons_per_s"] == pytest.approx(1_000 * view(1_000, row["shards"]) / 5.0)
    assert row["view"] <= 64 and presence_shards(1_000, TARGET_VIEW) == row["shards"]


def test_with_enough_shards_the_brokers_needed_grow_about_linearly() -> None:
    uncapped = SETTINGS[2]
    small, large = (brokers_needed(n, uncapped, MEASURED) for n in (10_000, 1_000_000))
    assert 60 < large / small < 110  # 100x the devices; the view shrinks a little


def test_the_command_reads_measured_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(MEASURED))
    assert main(["bench", "capacity", "--measured", f"mosquitto={path}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        len(result["rows"]) == 12 and result["nodes_per_broker"][SETTINGS[0].label]["mosquitto"] > 0
    )
