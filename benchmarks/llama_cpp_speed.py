"""The llama.cpp worker's decoding speed beside llama-cpp-python's own streaming, on the tiny random
GGUF of the tests (tests/tiny_gguf.py) on the CPU: answers of N tokens, greedy, medians of R.

The worker decodes from llama.cpp's token ids (`Llama.generate`); llama-cpp-python's
`create_completion(stream=True)` detokenizes the whole answer again at every token. With a model this
small the model's own time is small, so the figures show the decoding overhead of each.
Run: python benchmarks/llama_cpp_speed.py [--tokens N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    import tiny_gguf
    from llama_cpp import Llama

    from dynamo.llama_cpp.engine import LlamaCppEngine
    from dynamo.runtime.protocol import GenerateRequest

    model = tiny_gguf.write(Path(tempfile.mkdtemp()) / "tiny.gguf")
    llm = Llama(model_path=str(model), n_ctx=args.tokens + 64, verbose=False)
    engine = LlamaCppEngine(llm)
    # A prompt after which greedy decoding runs to the limit, as the rates are per token.
    prompt = next(f"hello {seed}" for seed in range(1000)
                  if llm.create_completion(f"hello {seed}", max_tokens=args.tokens, temperature=0)
                  ["choices"][0]["finish_reason"] == "length")

    async def worker() -> float:
        start, tokens = time.perf_counter(), 0
        async for chunk in engine.generate(GenerateRequest(model="m", prompt=prompt, max_tokens=args.tokens,
                                                           temperature=0)):
            tokens += chunk.tokens
        assert tokens == args.tokens, tokens
        return time.perf_counter() - start

    def upstream() -> float:
        start = time.perf_counter()
        for _ in llm.create_completion(prompt, max_tokens=args.tokens, temperature=0, stream=True):
            pass
        return time.perf_counter() - start

    print(f"answers of {args.tokens} tokens, greedy; medians of {args.runs}")
    for label, run in (("dynamo.llama_cpp worker", lambda: asyncio.run(worker())),
                       ("llama-cpp-python create_completion(stream=True)", upstream)):
        seconds = statistics.median(run() for _ in range(args.runs))
        print(f"  {label:<50} {args.tokens / seconds:8.0f} tokens/s  {seconds * 1000 / args.tokens:6.2f} ms a token")

if __name__ == "__main__":
    main()
