from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gossiprec.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossiprec.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("command", [[], ["baseline"], ["data"], ["data", "fetch"]])
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


def test_baseline_json_on_synthetic_data_lists_the_three_references() -> None:
    result = run_cli("baseline", "--dataset", "synthetic", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [r["name"] for r in report["results"]]
    assert names == ["centralized BPR-MF", "local-only BPR-MF", "popularity"]
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["centralized BPR-MF"]["hr10"] > by_name["popularity"]["hr10"]
    assert by_name["popularity"]["hr10"] > by_name["local-only BPR-MF"]["hr10"]
