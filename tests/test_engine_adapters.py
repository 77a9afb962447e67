"""How the vLLM, SGLang and TensorRT-LLM adapters map our requests and flags onto each engine's API.
The engines need a GPU, so their outputs here are objects shaped as the engines document them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO

from dynamo.runtime import worker
from dynamo.runtime.protocol import Chunk, GenerateRequest, RequestError
from dynamo.sglang import engine as sglang
from dynamo.trtllm import engine as trtllm
from dynamo.vllm import engine as vllm


def parse(argv: list[str], add_arguments=None):
    flags = worker.parser("test", "test")
    if add_arguments:
        add_arguments(flags)
    return worker.parse(flags, argv)


FULL = GenerateRequest(model="m", prompt="hi", max_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=["\n\n"])


def test_served_name_and_model_source(tmp_path):
    assert worker.served_name(parse(["Qwen/Qwen3-4B"])[0]) == "Qwen/Qwen3-4B"
    assert worker.served_name(parse(["--model-path", "~/llms/Qwen3-0.6B"])[0]) == "Qwen3-0.6B"
    assert worker.served_name(parse(["--model-path", "/m/Qwen3-0.6B-Q8_0.gguf"])[0]) == "Qwen3-0.6B-Q8_0"
    assert worker.served_name(parse(["Qwen/Qwen3-4B", "--model-name", "chat"])[0]) == "chat"
    assert worker.model_source(parse(["--model-path", "~/m"])[0]).endswith("/m")
    with pytest.raises(worker.InferenceError, match="no model"):
        worker.model_source(parse([])[0])
    with pytest.raises(worker.InferenceError, match="give one"):
        worker.model_source(parse(["a", "--model-path", "b"])[0])
    args, extra = parse(["--tp", "2", "--model-path", "b"])  # an engine flag's value is not the model
    assert (args.model, args.model_path, extra) == (None, "b", ["--tp", "2"])


def test_vllm_flags_and_sampling():
    args, extra = parse(["Qwen/Qwen3-4B", "--context-length", "4096", "--gpu-memory-utilization", "0.8",
                         "--enforce-eager"])
    assert vllm.engine_argv(args, extra) == ["--model", "Qwen/Qwen3-4B", "--max-model-len", "4096",
                                             "--gpu-memory-utilization", "0.8", "--enforce-eager"]
    assert vllm.sampling_kwargs(FULL) == {"max_tokens": 7, "temperature": 0.3, "top_p": 0.9, "seed": 11,
                                          "stop": ["\n\n"]}
    assert vllm.sampling_kwargs(GenerateRequest(model="m", prompt="hi")) == {}  # vLLM's defaults stand


def test_vllm_delta_outputs():
    tracker = vllm.DeltaTracker()
    def output(text, ids, finished, reason=None):
        return SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=ids, finish_reason=reason, index=0)],
                               finished=finished, prompt_token_ids=[1, 2, 3])
    [first] = tracker.chunks(output("Hel", [5, 6], False))
    [last] = tracker.chunks(output("lo", [7], True, "length"))
    assert (first.text, first.tokens, first.finish) == ("Hel", 2, None)
    assert (last.text, last.tokens, last.finish, last.prompt_tokens) == ("lo", 1, "length", 3)
    assert vllm.DeltaTracker().chunks(output("", [], True, "abort"))[0].finish == "stop"
    assert vllm.DeltaTracker().chunks(output("", [], True, "repetition"))[0].finish == "stop"
    with pytest.raises(RuntimeError, match="vLLM failed the request inside the engine"):
        vllm.DeltaTracker().chunks(output("", [], True, "error"))


def test_vllm_n_in_one_request():
    """n goes to SamplingParams.n; each CompletionOutput (with its index) becomes a chunk of its choice."""
    request = GenerateRequest(model="m", prompt="hi", n=2, seed=5)
    assert vllm.sampling_kwargs(request) == {"n": 2, "seed": 5}
    assert "n" not in vllm.sampling_kwargs(GenerateRequest(model="m", prompt="hi"))
    assert "n" in vllm.VllmEngine.features
    tracker = vllm.DeltaTracker(request)

    def completion(index, text, reason=None):
        return SimpleNamespace(index=index, text=text, token_ids=[0] * len(text), finish_reason=reason)
    both = tracker.chunks(SimpleNamespace(outputs=[completion(0, "a"), completion(1, "bc", "stop")], finished=False,
                                          prompt_token_ids=[1, 2]))
    assert [(c.index, c.text, c.finish, c.prompt_tokens) for c in both] == [(0, "a", None, None), (1, "bc", "stop", 2)]
    last = tracker.chunks(SimpleNamespace(outputs=[completion(0, "d", "length")], finished=True, prompt_token_ids=[1, 2]))
    assert [(c.index, c.text, c.finish) for c in last] == [(0, "d", "length")]


def test_sglang_flags_and_sampling():
    args, extra = parse(["--model-path", "/models/q", "--context-length", "2048", "--tp", "2",
                         "--mem-fraction-static", "0.7"])
    assert sglang.engine_argv(args, extra) == ["--model-path", "/models/q", "--context-length", "2048", "--tp", "2",
                                               "--mem-fraction-static", "0.7"]
    assert sglang.sampling_params(FULL) == {"max_new_tokens": 7, "temperature": 0.3, "top_p": 0.9,
                                            "sampling_seed": 11, "stop": ["\n\n"]}
    assert sglang.sampling_params(GenerateRequest(model="m", prompt="hi", n=3)) == {"n": 3}
    assert "n" in sglang.SglangEngine.features


@pytest.mark.parametrize("texts", [["He", "Hello", "Hello!"], ["He", "llo", "!"]], ids=["cumulative", "incremental"])
def test_sglang_streamed_text(texts):
    tracker = sglang.TextTracker()
    metas = [{"completion_tokens": 1}, {"completion_tokens": 2},
             {"completion_tokens": 4, "prompt_tokens": 9, "finish_reason": {"type": "length", "length": 4}}]
    chunks = [tracker.chunk({"text": text, "meta_info": meta}) for text, meta in zip(texts, metas)]
    assert "".join(chunk.text for chunk in chunks) == "Hello!"
    assert [chunk.tokens for chunk in chunks] == [1, 1, 2]
    assert (chunks[-1].finish, chunks[-1].prompt_tokens) == ("length", 9)
    stop = sglang.TextTracker().chunk({"text": "x", "meta_info": {"completion_tokens": 1, "prompt_tokens": 2,
                                                                  "finish_reason": {"type": "stop", "matched": 2}}})
    assert stop.finish == "stop"


def test_trtllm_arguments(tmp_path):
    extra = tmp_path / "engine.yaml"
    extra.write_text("kv_cache_config:\n  free_gpu_memory_fraction: 0.5\nmax_batch_size: 64\n")
    args, _ = parse(["nvidia/Llama-3.1-8B-Instruct-FP8", "--context-length", "8192", "--tensor-parallel-size", "2",
                     "--max-batch-size", "16", "--extra-engine-args", str(extra)], trtllm.add_arguments)
    assert trtllm.llm_kwargs(args) == {"model": "nvidia/Llama-3.1-8B-Instruct-FP8", "tensor_parallel_size": 2,
                                       "guided_decoding_backend": "xgrammar",
                                       "max_seq_len": 8192, "max_batch_size": 64,  # the YAML wins
                                       "kv_cache_config": {"free_gpu_memory_fraction": 0.5}}
    extra.write_text("- not a mapping\n")
    with pytest.raises(worker.InferenceError, match="expected a mapping of LLM arguments, got list"):
        trtllm.llm_kwargs(args)
    assert trtllm.sampling_kwargs(FULL)["seed"] == 11


def test_trtllm_streamed_outputs():
    def output(diff, ids, finished, reason=None):
        return SimpleNamespace(outputs=[SimpleNamespace(text_diff=diff, token_ids_diff=ids, finish_reason=reason,
                                                        index=0)], finished=finished, prompt_token_ids=[1] * 4)
    assert trtllm.chunks(output("a", [1], False))[0].finish is None
    [last] = trtllm.chunks(output("b", [2, 3], True, "stop"))
    assert (last.text, last.tokens, last.finish, last.prompt_tokens) == ("b", 2, "stop", 4)
    assert trtllm.chunks(output("", [], True, "length"))[0].finish == "length"
    assert [trtllm.chunks(output("", [], True, reason))[0].finish for reason in ("timeout", "cancelled")] == \
        ["stop", "stop"]
    assert trtllm.chunks(output("", [], False)) == []  # no news


def test_trtllm_n_in_one_request():
    """n goes to SamplingParams.n; each sequence of RequestOutput.outputs is its choice's chunk."""
    request = GenerateRequest(model="m", prompt="x", n=2)
    assert trtllm.sampling_kwargs(request) == {"n": 2, "top_p": 1.0} and "n" in trtllm.TrtllmEngine.features

    def sequence(index, diff, reason=None):
        return SimpleNamespace(index=index, text_diff=diff, token_ids_diff=[9] * len(diff), finish_reason=reason)
    first = trtllm.chunks(SimpleNamespace(outputs=[sequence(0, "a", "length"), sequence(1, "b")], finished=False,
                                          prompt_token_ids=[1] * 3), request)
    assert [(c.index, c.text, c.finish, c.prompt_tokens) for c in first] == [(0, "a", "length", 3), (1, "b", None, None)]
    # TensorRT-LLM lists every sequence in each output: the finished one again, with nothing new (the
    # worker drops it: test_the_worker_ends_each_choice_once).
    then = trtllm.chunks(SimpleNamespace(outputs=[sequence(0, "", "length"), sequence(1, "c", "stop")], finished=True,
                                         prompt_token_ids=[1] * 3), request)
    assert [(c.index, c.text, c.finish) for c in then] == [(0, "", "length"), (1, "c", "stop")]


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
CHAT = [{"role": "user", "content": "weather?"}]


def test_output_schema_and_features():
    free = GenerateRequest(model="m", messages=CHAT, tools=[WEATHER], tool_choice="auto")
    assert free.output_schema() is None and free.features() == ["tools"]
    named = GenerateRequest(model="m", messages=CHAT, tools=[WEATHER, CLOCK],
                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.output_schema() == {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": "get_weather"}, "arguments": WEATHER["function"]["parameters"]}}
    required = GenerateRequest(model="m", messages=CHAT, tools=[WEATHER, CLOCK], tool_choice="required")
    assert [option["properties"]["name"]["const"] for option in required.output_schema()["anyOf"]] == \
        ["get_weather", "get_time"]
    assert required.output_schema()["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    shaped = GenerateRequest(model="m", prompt="x", response_format={"type": "json_schema", "schema": schema},
                             logprobs=0)
    assert shaped.output_schema() == schema and shaped.features() == ["logprobs", "response_format"]
    assert GenerateRequest(model="m", prompt="x", response_format={"type": "json_object"}).output_schema() == \
        {"type": "object"}


class RecordingTokenizer:
    """Hugging Face's tokenizer API as the adapters call it (transformers is not installed here)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=True):
        self.calls.append({"messages": messages, "tools": tools})
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


def test_engine_prompt_carries_tools_token_ids_and_the_answer_so_far():
    tokenizer = RecordingTokenizer()
    chat = GenerateRequest(model="m", messages=CHAT, tools=[WEATHER], resumed_text=" it is")
    assert worker.engine_prompt(tokenizer, chat) == "<user>weather?<assistant> it is"
    assert tokenizer.calls == [{"messages": CHAT, "tools": [WEATHER]}]
    ids = GenerateRequest(model="m", prompt_token_ids=[5, 6], resumed_text="ab")
    assert worker.engine_prompt(tokenizer, ids) == [5, 6, 97, 98]
    assert worker.engine_prompt(tokenizer, GenerateRequest(model="m", prompt="hi")) == "hi"


def test_vllm_logprobs_and_resumed_prompt():
    assert vllm.sampling_kwargs(GenerateRequest(model="m", prompt="hi", logprobs=2)) == {"logprobs": 2}
    assert vllm.structured_output(None) == {}

    def logprob(value, rank, text):
        return SimpleNamespace(logprob=value, rank=rank, decoded_token=text)
    tracker = vllm.DeltaTracker(GenerateRequest(model="m", prompt="hi", logprobs=1, resumed_tokens=2))
    # vLLM returns the top alternatives plus the sampled token, which may not be among them.
    completion = SimpleNamespace(text="ab", token_ids=[7, 8], finish_reason="length", index=0, logprobs=[
        {7: logprob(-0.1, 1, "a"), 9: logprob(-2.5, 2, "z")},
        {3: logprob(-0.5, 1, "c"), 8: logprob(-1.5, 2, "b")}])
    [chunk] = tracker.chunks(SimpleNamespace(outputs=[completion], finished=True, prompt_token_ids=[1, 2, 3, 4, 5]))
    assert chunk.logprobs == [{"token": "a", "logprob": -0.1, "top": [{"token": "a", "logprob": -0.1}]},
                              {"token": "b", "logprob": -1.5, "top": [{"token": "c", "logprob": -0.5}]}]
    assert chunk.prompt_tokens == 3  # the 2 tokens carried over from a dead worker are not prompt


def test_sglang_structured_output_and_logprobs():
    schema = {"type": "object"}
    request = GenerateRequest(model="m", prompt="x", max_tokens=3, logprobs=1,
                              response_format={"type": "json_schema", "schema": schema})
    assert sglang.sampling_params(request) == {"max_new_tokens": 3, "json_schema": '{"type": "object"}'}
    # Engine.async_generate has no return_text_in_logprobs (SGLang 0.5.6.post2, 0.5.21): tokens come as ids
    assert sglang.generate_kwargs(request, [1, 2]) == {
        "input_ids": [1, 2], "sampling_params": {"max_new_tokens": 3, "json_schema": '{"type": "object"}'},
        "return_logprob": True, "top_logprobs_num": 1}
    assert "prompt" in sglang.generate_kwargs(GenerateRequest(model="m", prompt="x"), "x")
    tracker = sglang.TextTracker(request, LetterTokenizer())
    first = tracker.chunk({"text": "a", "meta_info": {"completion_tokens": 1, "output_token_logprobs": [
        (-0.1, 1, None)], "output_top_logprobs": [[(-0.1, 1, None)]]}})
    second = tracker.chunk({"text": "ab", "meta_info": {"completion_tokens": 2, "output_token_logprobs": [
        (-0.1, 1, None), (-0.2, 2, None)], "output_top_logprobs": [[(-0.1, 1, None)], [(-0.05, 3, None)]]}})
    assert first.logprobs == [{"token": "a", "logprob": -0.1, "top": [{"token": "a", "logprob": -0.1}]}]
    assert second.logprobs == [{"token": "b", "logprob": -0.2, "top": [{"token": "c", "logprob": -0.05}]}]


def test_sglang_finish_reasons():
    """SGLang's stop and length end the answer; an abort with a status code is an error (a 400 the
    request's fault), as SGLang's own server answers it; an abort without one ends the answer."""
    assert [sglang.finish(reason) for reason in (None, {"type": "stop", "matched": 2}, {"type": "length", "length": 4},
                                                 {"type": "abort", "message": "Aborted", "status_code": None})] == \
        [None, "stop", "length", "stop"]
    with pytest.raises(RequestError, match="input is longer than the context"):
        sglang.finish({"type": "abort", "message": "input is longer than the context", "status_code": 400})
    with pytest.raises(RuntimeError, match=r"SGLang aborted the request \(503\): out of memory"):
        sglang.finish({"type": "abort", "message": "out of memory", "status_code": 503})


class LetterTokenizer:
    """Decodes token id i as the i-th letter."""

    def decode(self, ids):
        return "".join(chr(96 + i) for i in ids)


def test_trtllm_logprobs():
    request = GenerateRequest(model="m", prompt="x", logprobs=1, resumed_tokens=1)
    floats = SimpleNamespace(outputs=[SimpleNamespace(text_diff="ab", token_ids_diff=[1, 2], logprobs_diff=[-0.1, -0.2],
                                                      finish_reason="length", index=0)], finished=True,
                             prompt_token_ids=[1] * 4)
    [chunk] = trtllm.chunks(floats, request, LetterTokenizer())
    assert chunk.logprobs == [{"token": "a", "logprob": -0.1, "top": []}, {"token": "b", "logprob": -0.2, "top": []}]
    assert chunk.prompt_tokens == 3
    ranked = SimpleNamespace(outputs=[SimpleNamespace(text_diff="a", token_ids_diff=[1], finish_reason=None, index=0,
                                                      logprobs_diff=[{1: SimpleNamespace(logprob=-0.3),
                                                                      3: SimpleNamespace(logprob=-0.2)}])],
                             finished=False, prompt_token_ids=[1])
    assert trtllm.chunks(ranked, request, LetterTokenizer())[0].logprobs == [
        {"token": "a", "logprob": -0.3, "top": [{"token": "c", "logprob": -0.2}]}]
    assert trtllm.sampling_kwargs(request) == {"logprobs": 1, "top_p": 1.0}


@pytest.mark.parametrize("module, package", [("dynamo.vllm", "vLLM"), ("dynamo.sglang.worker", "SGLang"),
                                             ("dynamo.trtllm", "TensorRT-LLM")])
def test_entry_points_without_their_engine(module, package):
    """Without a GPU the preflight refuses; skipped, the missing engine is named in one line."""
    refused = subprocess.run([sys.executable, "-m", module, "Qwen/Qwen3-0.6B"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "preflight: this host cannot run" in refused.stderr
    assert "no NVIDIA driver found" in refused.stderr and "Traceback" not in refused.stderr
    skipped = subprocess.run([sys.executable, "-m", module, "--skip-preflight", "Qwen/Qwen3-0.6B"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert skipped.returncode == 1 and "warning: preflight skipped" in skipped.stderr
    assert f"{package} is not installed here" in skipped.stderr and "Traceback" not in skipped.stderr


def test_sglang_n_in_one_request():
    """With n, SGLang streams each choice's outputs tagged with its index (cumulative text per choice)."""
    outputs = [{"index": 0, "text": "a", "meta_info": {"completion_tokens": 1}},
               {"index": 1, "text": "x", "meta_info": {"completion_tokens": 1}},
               {"index": 1, "text": "xy", "meta_info": {"completion_tokens": 2, "prompt_tokens": 2,
                                                        "finish_reason": {"type": "stop"}}},
               {"index": 0, "text": "ab", "meta_info": {"completion_tokens": 2, "prompt_tokens": 2,
                                                        "finish_reason": {"type": "length"}}}]
    calls = []

    async def async_generate(**kwargs):
        calls.append(kwargs)

        async def stream():
            for output in outputs:
                yield output
        return stream()

    engine = sglang.SglangEngine(SimpleNamespace(async_generate=async_generate,
                                                 tokenizer_manager=SimpleNamespace(tokenizer=RecordingTokenizer())))

    async def collect():
        return [chunk async for chunk in engine.generate(GenerateRequest(model="m", prompt="hi", n=2))]
    chunks = asyncio.run(collect())
    assert calls[0]["sampling_params"] == {"n": 2}
    assert [(c.index, c.text, c.finish) for c in chunks] == [(0, "a", None), (1, "x", None), (1, "y", "stop"),
                                                             (0, "b", "length")]


def test_the_worker_closes_an_answer_nobody_reads():
    """When the frontend goes away mid-answer the engine's answer is closed at once (vLLM and SGLang
    abort the request then; llama.cpp stops its thread), not whenever the garbage collector gets to it."""
    closed = []

    class Endless:
        features = frozenset()

        async def generate(self, request):
            try:
                while True:
                    yield Chunk(text="a", tokens=1)
            finally:
                closed.append(request.prompt)

    class GoneAfterTwo:  # a FrameWriter whose peer went away
        sent = 0

        def send(self, frame):
            self.sent += 1

        async def drain(self):
            if self.sent >= 2:
                raise ConnectionError("reset by peer")

    async def answer() -> list:
        await worker.WorkerServer(Endless(), "test")._answer(1, {"model": "m", "prompt": "hi"}, GoneAfterTwo())
        return list(closed)

    assert asyncio.run(answer()) == ["hi"]


class Sent:  # a FrameWriter that keeps the frames
    def __init__(self):
        self.frames = []

    def send(self, frame):
        self.frames.append(json.loads(frame))

    async def drain(self):
        pass


def test_the_worker_ends_each_choice_once():
    """An engine that lists a finished choice again (TensorRT-LLM lists every sequence in each output;
    vLLM and SGLang might): the worker sends nothing more of it, and ends the request when every choice
    has ended once, not at the second end of the first choice."""
    class Repeating:
        features = frozenset({"n"})

        async def generate(self, request):
            for index, text, finish in [(0, "a", "length"), (1, "b", None), (0, "", "length"), (1, "c", "stop"),
                                        (1, "", "stop")]:
                yield Chunk(text=text, tokens=len(text), finish=finish, prompt_tokens=3 if finish else None,
                            index=index)

    sent = Sent()
    asyncio.run(worker.WorkerServer(Repeating(), "test")._answer(7, {"model": "m", "prompt": "hi", "n": 2}, sent))
    assert [(frame.get("index", 0), frame["text"], frame.get("finish")) for frame in sent.frames] == [
        (0, "a", "length"), (1, "b", None), (1, "c", "stop")]


@pytest.mark.parametrize("features", [frozenset({"n"}), frozenset()], ids=["engine-n", "fan-out"])
def test_greedy_n_is_one_answer_sent_n_times(features):
    """temperature 0 with n > 1: vLLM and TensorRT-LLM refuse it ("n must be 1 when using greedy
    sampling"), and every choice would be the same answer anyway. The engine is asked once, for one
    choice, and the client gets n identical choices, not a 500."""
    asked = []

    class Greedy:
        async def generate(self, request):
            asked.append(request)
            if request.n > 1 and request.greedy():
                raise ValueError(f"n must be 1 when using greedy sampling, got {request.n}.")
            yield Chunk(text="Hi", tokens=1, logprobs=[{"token": "Hi", "logprob": -0.5, "top": []}])
            yield Chunk(text="!", tokens=1, finish="stop", prompt_tokens=2)

    Greedy.features = features
    sent = Sent()
    asyncio.run(worker.WorkerServer(Greedy(), "test")._answer(
        3, {"model": "m", "prompt": "hi", "n": 3, "temperature": 0, "seed": 4}, sent))
    assert [(request.n, request.seed) for request in asked] == [(1, 4)]
    assert [(frame.get("index", 0), frame["text"], frame.get("finish")) for frame in sent.frames] == [
        (0, "Hi", None), (1, "Hi", None), (2, "Hi", None), (0, "!", "stop"), (1, "!", "stop"), (2, "!", "stop")]
    assert all("error" not in frame for frame in sent.frames)
    assert GenerateRequest(model="m", prompt="x", temperature=0.0).greedy()
    assert not GenerateRequest(model="m", prompt="x").greedy()  # the engine's default temperature samples


def test_trtllm_samples_unless_greedy():
    """TensorRT-LLM takes no top_p and no top_k for greedy (and refuses n > 1 then); a request that
    is not greedy gets OpenAI's top_p of 1, a greedy one nothing that would make it sample."""
    assert trtllm.sampling_kwargs(GenerateRequest(model="m", prompt="x", temperature=0.7)) == \
        {"temperature": 0.7, "top_p": 1.0}
    assert trtllm.sampling_kwargs(GenerateRequest(model="m", prompt="x", top_p=0.5)) == {"top_p": 0.5}
    assert trtllm.sampling_kwargs(GenerateRequest(model="m", prompt="x", temperature=0)) == {"temperature": 0}


def test_sglang_seeded_choices_each_have_their_seed():
    """SGLang gives all n choices of one request the same sampling_seed (one answer n times): with a
    seed, each choice is a request of its own, seeded seed + index as vLLM seeds its n."""
    calls = []

    async def async_generate(**kwargs):
        calls.append(kwargs["sampling_params"])

        async def stream():
            yield {"text": f"s{kwargs['sampling_params']['sampling_seed']}",
                   "meta_info": {"completion_tokens": 1, "prompt_tokens": 1, "finish_reason": {"type": "stop"}}}
        return stream()

    engine = sglang.SglangEngine(SimpleNamespace(async_generate=async_generate,
                                                 tokenizer_manager=SimpleNamespace(tokenizer=RecordingTokenizer())))

    async def collect(request):
        return sorted([(c.index, c.text) async for c in engine.generate(request)])
    assert asyncio.run(collect(GenerateRequest(model="m", prompt="hi", n=2, seed=7))) == [(0, "s7"), (1, "s8")]
    assert calls == [{"sampling_seed": 7}, {"sampling_seed": 8}]
