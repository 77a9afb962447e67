"""Starting the runtime's entry points for a benchmark, as an installed wheel would run them."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes: other programs skew every figure."""
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def installed_env(**extra: str) -> dict[str, str]:
    """This environment with our modules byte-compiled, as pip leaves an installed wheel; a checkout
    with PYTHONDONTWRITEBYTECODE=1 would compile the sources again at every start."""
    compileall.compile_dir(REPO / "dynamo", quiet=1)
    env = {**os.environ, **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def start(module_args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`python -m MODULE ARGS`, returned once it prints its "ready" line."""
    process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPO, env=env, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stderr:
        if "ready" in line:
            return process
    raise SystemExit(f"{module_args[0]} exited before it was ready")
