# Sourced by .ci/setup and .ci/engines: `step "what" command...` prints what it starts, a line
# every minute while it runs (llama.cpp compiles for minutes), and its elapsed time when done.
STEPS_START=${STEPS_START:-$(date +%s)}
export STEPS_START

step() {
    local what=$1 started rc
    shift
    started=$(date +%s)
    echo "==> $what"
    ( while sleep 60; do echo "    ... $what: $(( $(date +%s) - started ))s so far"; done ) &
    local ticker=$!
    "$@" && rc=0 || rc=$?
    kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "error: $what failed (exit $rc) after $(( $(date +%s) - started ))s" >&2
        return "$rc"
    fi
    echo "    done in $(( $(date +%s) - started ))s (total $(( $(date +%s) - STEPS_START ))s)"
}
