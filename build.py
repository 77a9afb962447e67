#!/usr/bin/env python3
"""Thin entry point: `python build.py --framework vllm --cuda 12.9`, `python build.py matrix list`,
`python build.py render`, `python build.py verify IMAGE`, `python build.py doctor` (see --help).

Run as `python -m build` from this folder, Python would find this file before PyPA's `build`
package; then it hands over to that package, so `python -m build` builds our wheel as expected.
"""

import os
import runpy
import sys


def _pypa_build() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        runpy.run_module("build", run_name="__main__", alter_sys=True)
    except ImportError:
        sys.exit("error: PyPA's build is not installed: pip install build")


if __name__ == "__main__":
    if __spec__ is not None and __spec__.name == "build":
        _pypa_build()
    else:
        from dynamo.cli import main

        sys.exit(main(prog="python build.py"))
