#!/usr/bin/env bash
# Run a Dynamo image the way the field expects (GPU, shm, ulimits, IPC, network), after checking this
# host against the image's labels. `container/run.sh --help` lists the options; the logic lives in
# dynamo/run_image.py. Uses the checkout's .venv when there is one, else python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=python3
[ -x "$REPO/.venv/bin/python" ] && python="$REPO/.venv/bin/python"
command -v "$python" >/dev/null || { echo "run.sh: error: python3 is not installed (apt-get install python3)" >&2; exit 2; }
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m dynamo.run_image "$@"
