"""Where a command-line tool that a Python package installs (uv, syft, hadolint) is found."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_tool(name: str) -> str | None:
    """Beside this interpreter first (a virtual environment's bin folder, which is on no PATH when
    the environment is not activated), else on PATH."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
