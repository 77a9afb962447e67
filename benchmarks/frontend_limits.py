"""What the frontend spends refusing hostile bodies (issue 20): the time and the peak memory the
request parser takes for each, in this process (tracemalloc sees pydantic-core's allocations only
as the Python objects they become, so the process's peak RSS is printed too).

Before the limits, 560,000 empty messages (15.5 MB) took 7.1 s and 563 MB to refuse; with the
limits but no count before parsing (limits.excess), 0.9 s and 443 MB of RSS (the parser's tree).
Target: each refused in about a second at most, and in memory about the size of the body. Run: python benchmarks/frontend_limits.py
"""

from __future__ import annotations

import json
import resource
import time
import tracemalloc

from dynamo.frontend.openai import ChatRequest, CompletionRequest, InvalidRequest, parse

BODIES = {
    "560,000 empty messages": (ChatRequest, b'{"model": "m", "messages": [' + b", ".join([b"{}"] * 560_000) + b"]}"),
    "560,000 valid messages": (ChatRequest, json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "hi"}] * 560_000}).encode()),
    "JSON nested 1,000,000 deep": (ChatRequest, b"[" * 1_000_000),
    "2,000,000 token ids": (CompletionRequest, json.dumps({"model": "m", "prompt": list(range(2_000_000))}).encode()),
    "16 MiB of one prompt": (CompletionRequest, json.dumps({"model": "m", "prompt": "x" * (16 * 2**20 - 40)}).encode()),
}


def refuse(kind: type, body: bytes) -> str:
    try:
        parse(kind, body)
        return "accepted"
    except InvalidRequest as refused:
        return f"{refused.status} {str(refused)[:60]}"


def main() -> None:
    print(f"{'body':<28} {'MB':>6} {'ms':>8} {'peak MB':>8}  answer")
    for name, (kind, body) in BODIES.items():
        began = time.perf_counter()
        answer = refuse(kind, body)
        elapsed = time.perf_counter() - began
        tracemalloc.start()  # a second time, traced: tracing slows every allocation
        refuse(kind, body)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:<28} {len(body) / 1e6:>6.1f} {elapsed * 1000:>8.1f} {peak / 1e6:>8.1f}  {answer}")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
