"""`meshchain sim privacy` as a user meets it: JSON alone on stdout, progress on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from meshchain.cli.main import cli

DEADLINE = 120.0
SMALL = ("--nodes", "30", "--graphs", "1", "--trials", "1", "--spy-fraction", "0.2")


def privacy(*options: str, hashseed: str = "0") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshchain", "sim", "privacy", *SMALL, *options],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env=os.environ | {"PYTHONHASHSEED": hashseed},
    )


def test_prints_precision_and_recall_as_json_and_repeats_itself() -> None:
    reports = {}
    for routing in ("diffusion", "dandelion"):
        result = privacy("--routing", routing, "--seed", "2")
        assert result.returncode == 0, result.stderr
        reports[routing] = json.loads(result.stdout)  # nothing else on stdout
        assert "graph 1/1 trial 1/1" in result.stderr
        again = privacy("--routing", routing, "--seed", "2", "--quiet", hashseed="1")
        assert again.stdout == result.stdout, "same options and seed, different JSON"
        assert again.stderr == ""
    for routing, report in reports.items():
        assert {"precision", "recall", "setting", "runs"} <= report.keys()
        assert 0.0 <= report["precision"] <= report["recall"] <= 1.0
        assert report["setting"]["routing"] == routing
        assert report["setting"]["spies"] == 6
        assert report["setting"]["honest_nodes"] == 24
        assert report["unseen_transactions"] == 0
    # Same graph and spies for both (they come from the seed): Dandelion++ traces fewer.
    assert reports["dandelion"]["recall"] < reports["diffusion"]["recall"]


def test_unusable_options_exit_2() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", "privacy", "--routing", "flood"])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["sim", "privacy", "--nodes", "10", "--spy-fraction", "0.05"])
    assert result.exit_code == 2
    assert "spy" in result.output
