#!/usr/bin/env bash
# Run a Dynamo image the way the field expects (GPU, shm, ulimits, IPC, network), after checking this
# host against the image's labels: driver floor and compute capabilities, explained before `docker run`
# instead of the NVIDIA container toolkit's "unsatisfied condition: cuda>=12.9".
#
#   container/run.sh [options] [-- COMMAND...]
#
#   --image IMAGE         default: dynamo:latest-<framework>
#   --framework NAME      default: vllm (only picks the default image)
#   --gpus all|none|SPEC  default: all; none runs without GPUs (CPU images)
#   --shm-size SIZE       default: 10G
#   --ulimit NAME=VALUE   replaces that default (memlock=-1, stack=67108864, nofile=65536:65536); repeatable
#   --network NAME        default: host; -p mappings switch it to the default bridge
#   -p HOST:CONTAINER     publish a port (repeatable)
#   -v SRC:DST, -e NAME[=VALUE]   repeatable
#   -it                   interactive terminal
#   --mount-workspace     this repository at /workspace, HF_TOKEN passed, a persistent Hugging Face cache
#   --hf-cache DIR        the Hugging Face cache to mount (default: ${HF_HOME:-~/.cache/huggingface})
#   --name NAME, --entrypoint CMD, --user USER, --workdir DIR
#   --skip-preflight      do not check this host against the image's labels
#   --dry-run             print the exact docker command and run nothing
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="" FRAMEWORK="vllm" GPUS="all" SHM="10G" NETWORK="host" INTERACTIVE=0 WORKSPACE=0 DRY_RUN=0 PREFLIGHT=1
HF_CACHE="${HF_HOME:-$HOME/.cache/huggingface}" NAME="" ENTRYPOINT="" USER_ARG="" WORKDIR=""
PORTS=() VOLUMES=() ENVS=() COMMAND=()
declare -A ULIMITS=([memlock]=-1 [stack]=67108864 [nofile]=65536:65536)

die() { echo "run.sh: error: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --image) need "$@"; IMAGE="$2"; shift 2 ;;
        --framework) need "$@"; FRAMEWORK="$2"; shift 2 ;;
        --gpus) need "$@"; GPUS="$2"; shift 2 ;;
        --shm-size) need "$@"; SHM="$2"; shift 2 ;;
        --network) need "$@"; NETWORK="$2"; shift 2 ;;
        --ulimit) need "$@"; [[ "$2" == *=* ]] || die "--ulimit expects NAME=VALUE, got '$2'"
                  ULIMITS["${2%%=*}"]="${2#*=}"; shift 2 ;;
        -p|--publish) need "$@"; PORTS+=("$2"); shift 2 ;;
        -v|--volume) need "$@"; VOLUMES+=("$2"); shift 2 ;;
        -e|--env) need "$@"; ENVS+=("$2"); shift 2 ;;
        -it|-ti) INTERACTIVE=1; shift ;;
        --mount-workspace) WORKSPACE=1; shift ;;
        --hf-cache) need "$@"; HF_CACHE="$2"; shift 2 ;;
        --name) need "$@"; NAME="$2"; shift 2 ;;
        --entrypoint) need "$@"; ENTRYPOINT="$2"; shift 2 ;;
        --user) need "$@"; USER_ARG="$2"; shift 2 ;;
        --workdir) need "$@"; WORKDIR="$2"; shift 2 ;;
        --skip-preflight) PREFLIGHT=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; COMMAND=("$@"); break ;;
        *) die "unknown option '$1' (see --help); put the container's command after --" ;;
    esac
done
IMAGE="${IMAGE:-dynamo:latest-$FRAMEWORK}"

args=(docker run --rm)
[ "$INTERACTIVE" = 1 ] && args+=(-it)
[ "$GPUS" != none ] && args+=(--gpus "$GPUS")
args+=(--shm-size="$SHM")
for name in $(printf '%s\n' "${!ULIMITS[@]}" | sort); do args+=(--ulimit "$name=${ULIMITS[$name]}"); done
args+=(--ipc host)
if [ ${#PORTS[@]} -gt 0 ]; then
    for port in "${PORTS[@]}"; do args+=(-p "$port"); done
else
    args+=(--network "$NETWORK")
fi
if [ "$WORKSPACE" = 1 ]; then
    mkdir -p "$HF_CACHE"
    args+=(-v "$REPO:/workspace" -w /workspace -e HF_TOKEN -v "$HF_CACHE:/home/dynamo/.cache/huggingface")
fi
for volume in "${VOLUMES[@]}"; do args+=(-v "$volume"); done
for env in "${ENVS[@]}"; do args+=(-e "$env"); done
[ -n "$NAME" ] && args+=(--name "$NAME")
[ -n "$ENTRYPOINT" ] && args+=(--entrypoint "$ENTRYPOINT")
[ -n "$USER_ARG" ] && args+=(--user "$USER_ARG")
[ -n "$WORKDIR" ] && args+=(-w "$WORKDIR")
args+=("$IMAGE" "${COMMAND[@]}")

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${args[@]}" | sed 's/ $/\n/'
    exit 0
fi

command -v docker >/dev/null || { echo "run.sh: error: docker is not installed (apt-get install docker.io)" >&2; exit 1; }
if ! labels="$(docker image inspect --format '{{json .Config.Labels}}' "$IMAGE" 2>/dev/null)"; then
    echo "run.sh: error: image $IMAGE is not here; build it: python build.py --framework $FRAMEWORK" >&2
    exit 1
fi

if [ "$PREFLIGHT" = 1 ]; then
    python=python3
    [ -x "$REPO/.venv/bin/python" ] && python="$REPO/.venv/bin/python"
    # The image's release, framework and CUDA come from its labels; the doctor checks only what
    # the host decides (CPU, driver, GPUs). An image run without GPUs is checked as a CPU build.
    if ! subject="$(LABELS="$labels" GPUS="$GPUS" "$python" -c '
import json, os
labels = json.loads(os.environ["LABELS"] or "{}") or {}
get = lambda key: labels.get("dev.dynamo." + key, "")
if not get("release"):
    raise SystemExit(3)
cuda = "cpu" if os.environ["GPUS"] == "none" or not get("cuda.version") else get("cuda.version")
print(get("release"), get("framework"), cuda)' 2>/dev/null)"; then
        echo "run.sh: warning: $IMAGE has no dev.dynamo labels (not built by build.py); the host was not checked" >&2
    else
        read -r release framework cuda <<<"$subject"
        image_cuda="$(LABELS="$labels" "$python" -c 'import json, os; print((json.loads(os.environ["LABELS"]) or {}).get("dev.dynamo.cuda.version", ""))')"
        if [ "$GPUS" = none ] && [ -n "$image_cuda" ]; then
            echo "run.sh: $IMAGE is a CUDA $image_cuda image and needs GPUs; drop --gpus none (or pass --skip-preflight)" >&2
            exit 1
        fi
        report="$(mktemp)"
        trap 'rm -f "$report"' EXIT
        status=0
        PYTHONPATH="$REPO" "$python" "$REPO/build.py" doctor --scope host --release "$release" \
            --framework "$framework" --cuda "$cuda" >"$report" 2>&1 || status=$?
        if [ "$status" != 0 ]; then
            if [ "$status" = 1 ]; then
                echo "run.sh: this host cannot run $IMAGE:" >&2
                grep -E '^(✗|  +fix:)' "$report" >&2 || cat "$report" >&2
                echo "run.sh: nothing was started; fix the above, or pass --skip-preflight to try anyway" >&2
                exit 1
            fi
            echo "run.sh: warning: the host check could not run ($(tail -1 "$report")); continuing" >&2
        fi
        # Warnings about how to start the container here (the matrix's caveats), with their fixes.
        grep -A1 -E '^! caveat' "$report" | grep -vE '^--$' | sed 's/^/run.sh: warning: /' >&2 || true
    fi
fi

rm -f "${report:-}"
trap - EXIT
exec "${args[@]}"
