"""The one architectural rule: src/meshchain/core/ does no I/O and owns no global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "meshchain" / "core"
FORBIDDEN_MODULES = {"asyncio", "socket", "time", "threading", "selectors", "sqlite3", "os"}
# Module-level functions of `random` that use the hidden global generator.
GLOBAL_RANDOM_FUNCTIONS = {
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "getrandbits",
    "randbytes",
    "seed",
    "betavariate",
    "expovariate",
    "normalvariate",
    "lognormvariate",
    "triangular",
    "vonmisesvariate",
    "paretovariate",
    "weibullvariate",
    "binomialvariate",
}


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def violations(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import ...")
            if root == "random":
                for alias in node.names:
                    if alias.name in GLOBAL_RANDOM_FUNCTIONS:
                        found.append(f"from random import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr in GLOBAL_RANDOM_FUNCTIONS
        ):
            found.append(f"random.{node.func.attr}() on line {node.lineno}")
    return found


def test_core_has_modules_to_check() -> None:
    assert len(core_files()) >= 10


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import asyncio",
        "import time",
        "from socket import socket",
        "import threading as t",
        "from selectors import DefaultSelector",
        "import random\nx = random.random()",
        "import random\nrandom.shuffle([1])",
        "from random import choice",
    ],
)
def test_checker_catches_each_kind_of_violation(snippet: str) -> None:
    assert violations(snippet)


def test_checker_allows_injected_random() -> None:
    assert violations("import random\nrng = random.Random(1)\nrng.random()") == []
