"""`python -m dynamo.frontend --interactive`: a chat in the terminal with whichever worker serves."""

from __future__ import annotations

import asyncio
import sys
from contextlib import aclosing

from dynamo.frontend.router import NoWorker, Router, WorkerFailed, WorkerGone
from dynamo.runtime.protocol import GenerateRequest

PROMPT = "✔ User · "
WAIT_SECONDS = 60


async def _choose_model(router: Router, wanted: str | None) -> str:
    """The model to chat with: --model, else the only one served, once a worker serves it."""
    print("waiting for a worker…", file=sys.stderr, flush=True)
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        models = router.models()
        if wanted in models or (wanted is None and models):
            return wanted or models[0]
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise NoWorker(wanted or "any", False, models)
        try:
            await asyncio.wait_for(router.changed.wait(), timeout=remaining)
        except asyncio.TimeoutError:
            pass


async def chat(router: Router, model: str | None, max_tokens: int | None) -> None:
    model = await _choose_model(router, model)
    print(f"chatting with {model}; end with Ctrl-D", file=sys.stderr, flush=True)
    history: list[dict[str, str]] = []
    loop = asyncio.get_running_loop()
    while True:
        print(PROMPT, end="", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            print()
            return
        if not line.strip():
            continue
        history.append({"role": "user", "content": line.strip()})
        answer: list[str] = []
        try:
            async with aclosing(router.generate(GenerateRequest(model=model, messages=history,
                                                                max_tokens=max_tokens))) as frames:
                async for frame in frames:
                    print(frame["text"], end="", flush=True)
                    answer.append(frame["text"])
        except (NoWorker, WorkerFailed, WorkerGone) as error:
            print(f"\nerror: {error or 'no worker serves ' + model}", file=sys.stderr, flush=True)
            history.pop()
            continue
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(answer)})
