"""What the engine contract tests share. Standard library only (besides the engine under test and
our package): the tests also run inside the engine images, which have no pytest.

An engine that is not installed skips its tests, with a reason that starts "engine not installed:".
DYNAMO_CONTRACT_REQUIRE=vllm,sglang (a comma-separated list) makes a missing engine an error
instead: an image's check that its engine's contract really ran."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from types import ModuleType
from typing import Any

from dynamo.runtime import worker
from dynamo.runtime.protocol import GenerateRequest

# vLLM's argument parser infers the device (its platform, chosen once per process) while it builds
# its defaults, and fails on a host without a GPU; no test here runs a model, and vLLM's CPU
# platform parses the same.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
OPENAI_FINISH_REASONS = {"stop", "length"}  # an engine's answer ends with one of these (tool_calls is the frontend's)
SKIP_PREFIX = "engine not installed:"


def engine(name: str, module: str) -> tuple[ModuleType | None, str]:
    """The engine's module, or None and why it is missing. A missing engine named in
    DYNAMO_CONTRACT_REQUIRE raises, so that its tests cannot pass by being skipped."""
    try:
        return importlib.import_module(module), ""
    except ImportError as error:
        if name in os.environ.get("DYNAMO_CONTRACT_REQUIRE", "").split(","):
            raise RuntimeError(f"DYNAMO_CONTRACT_REQUIRE names {name}, and {module} cannot be imported: {error}") \
                from error
        return None, f"{SKIP_PREFIX} {name} ({module}: {error})"


def tokenizer() -> Any:
    """A real Hugging Face tokenizer (transformers' fast tokenizer, as the engines load one) that
    needs no download: byte-level, one token per byte, with a chat template that lays out tools."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {byte: index for index, byte in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|end|>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    result = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|end|>")
    result.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                            "{% if tools %}<tools>{{ tools | tojson }}{% endif %}"
                            "{% if add_generation_prompt %}<assistant>{% endif %}")
    return result


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
CHAT = [{"role": "user", "content": "Weather in Paris?"}]


def request_shapes() -> dict[str, GenerateRequest]:
    """Every shape of request the frontend sends a worker (dynamo/frontend/openai.py's to_generate)."""
    def request(**fields: Any) -> GenerateRequest:
        return GenerateRequest(model="m", **({"prompt": "Hello"} | fields))
    return {
        "defaults": request(),
        "all sampling controls": request(max_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=["\n\n", "END"]),
        "greedy": request(temperature=0.0, max_tokens=5),
        "n": request(n=3, temperature=0.8),
        "n with a seed": request(n=2, seed=5),
        "greedy n": request(n=3, temperature=0.0),
        "logprobs, chosen token only": request(logprobs=0),
        "top logprobs": request(logprobs=5, max_tokens=3),
        "logprobs with n": request(logprobs=2, n=2, temperature=1.0),
        "json_schema": request(response_format={"type": "json_schema", "schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}),
        "json_object": request(response_format={"type": "json_object"}),
        "chat": GenerateRequest(model="m", messages=CHAT, max_tokens=4),
        "chat with tools": GenerateRequest(model="m", messages=CHAT, tools=[WEATHER, CLOCK], tool_choice="auto"),
        "named tool call": GenerateRequest(model="m", messages=CHAT, tools=[WEATHER, CLOCK],
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        "required tool call": GenerateRequest(model="m", messages=CHAT, tools=[WEATHER, CLOCK], tool_choice="required"),
        "prompt token ids": GenerateRequest(model="m", prompt_token_ids=[72, 105], max_tokens=2),
        "migrated chat": GenerateRequest(model="m", messages=CHAT, max_tokens=3, resumed_text=" It is",
                                         resumed_tokens=2),
        "migrated token ids": GenerateRequest(model="m", prompt_token_ids=[72, 105], resumed_text="!", resumed_tokens=1),
    }


def expected_prompt(request: GenerateRequest, hf_tokenizer: Any) -> str | list[int]:
    """What the engine should be given: the prompt's token ids or text, a chat through the model's
    template with its tools, and after it the answer so far of a migrated request."""
    if request.prompt_token_ids is not None:
        resumed = hf_tokenizer.encode(request.resumed_text, add_special_tokens=False) if request.resumed_text else []
        return request.prompt_token_ids + resumed
    if request.messages is not None:
        return hf_tokenizer.apply_chat_template(request.messages, tools=request.tools, tokenize=False,
                                                add_generation_prompt=True) + request.resumed_text
    return request.prompt + request.resumed_text


class Frames:
    """A FrameWriter that keeps the frames the worker sends."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(json.loads(frame))

    async def drain(self) -> None:
        pass


def serve(adapter: Any, request: GenerateRequest, framework: str) -> list[dict[str, Any]]:
    """The frames the worker sends for one request, served by `adapter` (the path a frontend's
    request takes: the worker's choice handling, then the adapter, then the engine)."""
    from dynamo.runtime.protocol import generate_frame

    frames = Frames()
    body = json.loads(generate_frame(1, request))["generate"]
    asyncio.run(worker.WorkerServer(adapter, framework)._answer(1, body, frames))
    return frames.frames


def choices(frames: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each choice's text, tokens, finish reason and logprobs entries, from the worker's frames."""
    result: dict[int, dict[str, Any]] = {}
    for frame in frames:
        choice = result.setdefault(frame.get("index", 0), {"text": "", "tokens": 0, "finish": None, "logprobs": []})
        choice["text"] += frame["text"]
        choice["tokens"] += frame["tokens"]
        choice["logprobs"] += frame.get("logprobs") or []
        if "finish" in frame:
            choice["finish"], choice["prompt_tokens"] = frame["finish"], frame["prompt_tokens"]
    return result


KV_BLOCK = 4
KV_PROMPT = list(range(100, 112))  # three blocks
KV_OTHER = [*KV_PROMPT[:4], 7, 7, 7, 7]  # shares the first block


async def check_kv_relay(test: Any, relay: Any, publish: Any, stored: Any, removed: Any, cleared: Any) -> None:
    """An engine's own KV event publisher, connected to the adapter's relay (runtime/engine_kv_events.py),
    sends its own event objects; the frontend's index, fed the relay's frames, must find each prompt's
    cached prefix in the frontend's own hashes (kv_events.block_hashes of the prompt's token ids).
    `publish(events)` sends a batch; `stored(tokens, start, medium)` makes the event of the blocks of
    tokens[start:] (each block's engine hash: of all the tokens up to its end), `removed(tokens)` of
    the block ending tokens, `cleared()` the event that drops everything."""
    import time

    from dynamo.frontend.kv_index import KvIndex
    from dynamo.runtime.kv_events import block_hashes

    frames = Frames()
    size = relay.publisher.block_size
    relay.publisher.subscribe(frames)  # as a frontend's subscription does: all held now (nothing)
    test.assertEqual(frames.frames, [{"id": 0, "kv": {"block_size": size, "clear": True}}])

    async def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(frames.frames) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count - len(frames.frames)} KV event frames did not come: {frames.frames}")
            await asyncio.sleep(0.01)

    # A PUB socket drops what it sends before its connection stands: knock until it does.
    deadline = time.monotonic() + 10
    while len(frames.frames) == 1:
        test.assertLess(time.monotonic(), deadline, "the engine's AllBlocksCleared never reached the relay")
        publish([cleared()])
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    frames.frames.clear()

    publish([stored(KV_PROMPT, 0, "GPU")])
    publish([stored(KV_OTHER, KV_BLOCK, "GPU"), stored(KV_PROMPT[:KV_BLOCK], 0, "CPU"), removed(KV_PROMPT)])
    await wait_for(3)
    index = KvIndex()
    for frame in frames.frames:
        test.assertEqual(frame["kv"]["block_size"], KV_BLOCK)  # the worker now advertises the engine's
        index.apply("worker", frame["kv"])
    ours, other = block_hashes(KV_PROMPT, KV_BLOCK), block_hashes(KV_OTHER, KV_BLOCK)
    test.assertEqual([frame["kv"].get("stored") for frame in frames.frames], [ours, other[1:], None])
    test.assertEqual(frames.frames[2]["kv"]["removed"], ours[2:])
    test.assertEqual(index.overlaps(ours), {"worker": 2})
    test.assertEqual(index.overlaps(other), {"worker": 2})
    test.assertEqual(sorted(relay.translator.held()), sorted([*ours[:2], other[1]]))

    publish([cleared()])
    await wait_for(4)
    index.apply("worker", frames.frames[3]["kv"])
    test.assertEqual(index.overlaps(ours), {})
