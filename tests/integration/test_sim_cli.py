"""`meshchain sim run` as a user meets it: real processes, files and exit statuses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshchain.cli.main import cli
from meshchain.sim.config import SimConfig
from meshchain.sim.report import BANDWIDTH_PLOT, PROPAGATION_PLOT, report_json, write_report
from meshchain.sim.world import World

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.toml"
DEADLINE = 120.0
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small but with every moving part: lossy links, bandwidth queues, a partition, churn and
# a crash with restart, so that any hash-order dependence has a chance to show.
TINY = """\
# tiny: determinism check
name = "tiny"
duration = 45.0
settle = 12.0

[network]
nodes = 14
out_degree = 3
upload_bps = 5_000_000
loss = 0.01

[network.latency]
model = "uniform"
low_ms = 5
high_ms = 80

[workload]
tx_rate = 4.0
wallets = 12
authorities = 2
block_interval = 5.0

[[faults.partitions]]
start = 11.0
end = 14.0
groups = [["0-6"]]

[faults.churn]
start = 6.0
interval = 5.0
fraction = 0.15
downtime = 3.0

[[faults.crashes]]
node = 9
at = 21.0
restart_at = 24.0
"""


def sim_run(
    scenario: Path, out: Path, *extra: str, hashseed: str = "0"
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONHASHSEED": hashseed}
    return subprocess.run(
        [sys.executable, "-m", "meshchain", "sim", "run", str(scenario), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env=env,
    )


def test_smoke_scenario_runs_clean_and_writes_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = sim_run(SMOKE, out, "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert {"scenario", "seed", "metrics", "invariant_violations"} <= report.keys()
    assert report["invariant_violations"] == []
    assert report["seed"] == 3
    assert report["scenario"]["name"] == "smoke"
    assert report["metrics"]["blocks_produced"] > 0
    assert report["metrics"]["propagation_seconds"]["transaction"]["count"] > 0
    assert f"report: {out / 'report.json'}" in result.stdout
    assert "virtual s" in result.stderr  # the progress bar
    if HAVE_MATPLOTLIB:
        for name in (PROPAGATION_PLOT, BANDWIDTH_PLOT):
            assert (out / name).read_bytes().startswith(PNG_MAGIC), name


def test_same_scenario_and_seed_give_byte_identical_reports(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    runs = {}
    for label, seed, hashseed in (("a", "5", "1"), ("b", "5", "2"), ("c", "6", "1")):
        result = sim_run(scenario, tmp_path / label, "--seed", seed, "--quiet", hashseed=hashseed)
        assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: violations
        runs[label] = (tmp_path / label / "report.json").read_bytes()
    assert runs["a"] == runs["b"], "same scenario and seed under different hash seeds differ"
    assert runs["a"] != runs["c"], "a different seed gave the same run"
    first = json.loads(runs["a"])
    assert first["metrics"]["transactions_submitted"] > 0
    assert first["metrics"]["network"]["messages_sent"] > 0


def test_bad_scenario_exits_2_naming_the_key(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(TINY.replace("out_degree = 3", "out_degree = 14"))
    result = sim_run(scenario, tmp_path / "out")
    assert result.returncode == 2
    assert "bad.toml" in result.stderr
    assert "impossible topology" in result.stderr
    assert "$.network.out_degree" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for an unusable scenario"


def test_invariant_violation_exits_1_and_prints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    real_report = World.report

    def report_with_violation(world: World) -> dict[str, Any]:
        return real_report(world) | {"invariant_violations": ["t=1.000: planted violation"]}

    monkeypatch.setattr(World, "report", report_with_violation)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sim", "run", str(scenario), "--out", str(out), "--quiet", "--seed", "2"]
    )
    assert result.exit_code == 1, result.output
    assert "planted violation" in result.output
    written = json.loads((out / "report.json").read_text())
    assert written["invariant_violations"] == ["t=1.000: planted violation"]


def test_report_without_matplotlib_warns_once_and_drops_stale_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(SimConfig(name="bare", nodes=4, out_degree=2, duration=6.0, settle=2.0), 1)
    world.run()
    stale = tmp_path / PROPAGATION_PLOT
    stale.write_bytes(b"old")
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import` raise ImportError
    path = write_report(world, tmp_path)
    assert path.read_text() == report_json(world.report())
    assert path.read_text().endswith("}\n")
    assert not stale.exists()
    assert not (tmp_path / BANDWIDTH_PLOT).exists()
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert "matplotlib is not installed" in warning


def test_report_json_is_canonical() -> None:
    text = report_json({"b": 1, "a": {"d": [3, 1], "c": None}})
    expected = '{\n  "a": {\n    "c": null,\n    "d": [\n      3,\n      1\n    ]\n  },\n'
    assert text == expected + '  "b": 1\n}\n'
