#!/usr/bin/env python3
"""Thin entry point: `python build.py matrix list|show|check` (see `python build.py --help`)."""

import sys

from dynamo.cli import main

if __name__ == "__main__":
    sys.exit(main())
