"""What a user installs: one top-level name, typed packages, the layers kept."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("crypto", "gossip", "node", "sim", "cli")


def test_the_wheel_installs_one_top_level_name_with_typed_packages(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("gossiprec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"gossiprec"}
    for layer in LAYERS:
        assert f"gossiprec/{layer}/py.typed" in names
        assert f"gossiprec/{layer}/__init__.py" in names
    assert not any(name.startswith("gossiprec/tests/") for name in names)


def test_no_layer_imports_upward_and_no_modules_import_in_a_circle() -> None:
    # import-linter reads every import statement, inside functions and TYPE_CHECKING too.
    checked = subprocess.run(
        [Path(sys.executable).with_name("lint-imports")], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in checked.stdout
