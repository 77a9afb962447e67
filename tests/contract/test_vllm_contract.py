"""The vLLM adapter against the installed vLLM: an engine made by create_autospec of vLLM's own
AsyncLLMEngine (so a call that does not match its methods, sync or async, fails as it would on a
GPU), vLLM's own SamplingParams for every request shape the frontend sends, and vLLM's own
RequestOutput, CompletionOutput and logprobs objects through the adapter's delta tracking.
Standard library only: `python -m unittest discover -s tests/contract -v` runs it in the image."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import unittest
from typing import Any
from unittest import mock

from contract_helpers import (
    OPENAI_FINISH_REASONS,
    choices,
    engine,
    expected_prompt,
    request_shapes,
    serve,
    tokenizer,
)

from dynamo.runtime.protocol import GenerateRequest

vllm, MISSING = engine("vllm", "vllm")
if vllm is not None:
    from vllm import AsyncLLMEngine, SamplingParams
    from vllm.config import CacheConfig
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import RequestOutputKind

    from dynamo.vllm import engine as adapter

ANSWER = ["Hi", "!"]  # each sequence's answer, in two deltas


def delta_logprobs(flat: bool, token_ids: list[int], wanted: int, decode) -> Any:
    """vLLM's logprobs of new tokens, built as vLLM builds them (append_logprobs_for_next_position:
    the sampled token, then the `wanted` likeliest), as FlatLogprobs or a list of {token id: Logprob}."""
    from vllm.logprobs import append_logprobs_for_next_position, create_sample_logprobs

    result = create_sample_logprobs(flat)
    for position, token_id in enumerate(token_ids):
        top = [token_id + 1 + rank for rank in range(wanted)]  # likelier than the sampled token
        values = [-1.0 - position] + [-0.5 - rank / 10 for rank in range(wanted)]
        append_logprobs_for_next_position(result, [token_id, *top], values,
                                          [decode([token]) for token in [token_id, *top]], wanted + 1, wanted)
    return result


class RecordingEngine:
    """create_autospec of vLLM's AsyncLLMEngine whose generate answers with real RequestOutputs
    (output_kind DELTA, as the adapter asks): each of the n sequences says ANSWER, then stops."""

    def __init__(self, flat_logprobs: bool = False, finish: str = "stop") -> None:
        self.tokenizer = tokenizer()
        self.mock = mock.create_autospec(AsyncLLMEngine, instance=True)
        self.mock.generate.side_effect = self.generate
        self.mock.get_tokenizer.return_value = self.tokenizer
        # Set by AsyncLLM.__init__ (an instance attribute, which autospec leaves out).
        self.mock.vllm_config = mock.Mock(cache_config=CacheConfig(block_size=32),
                                          model_config=mock.Mock(tokenizer=None, tokenizer_revision=None))
        self.calls: list[tuple[Any, Any]] = []
        self.flat_logprobs, self.finish = flat_logprobs, finish

    async def generate(self, prompt, sampling_params, request_id, **_):
        self.calls.append((prompt, sampling_params))
        prompt_ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else self.tokenizer.encode(prompt)
        for step, text in enumerate(ANSWER):
            last = step == len(ANSWER) - 1
            outputs = []
            for index in range(sampling_params.n):
                token_ids = self.tokenizer.encode(text, add_special_tokens=False)
                outputs.append(CompletionOutput(
                    index=index, text=text, token_ids=token_ids, cumulative_logprob=None,
                    logprobs=None if sampling_params.logprobs is None else delta_logprobs(
                        self.flat_logprobs, token_ids, sampling_params.logprobs, self.tokenizer.decode),
                    finish_reason=self.finish if last else None))
            yield RequestOutput(request_id=request_id, prompt=None, prompt_token_ids=prompt_ids, prompt_logprobs=None,
                                outputs=outputs, finished=last)


@unittest.skipUnless(vllm, MISSING)
class VllmContract(unittest.TestCase):
    def test_create_takes_the_tokenizer_as_vllm_gives_it(self):
        """dynamo.vllm.engine.create on the real AsyncLLMEngine's API: get_tokenizer is synchronous in
        vLLM 0.20.1 and 0.31.0 (awaiting its answer was a TypeError once the model loaded)."""
        built = RecordingEngine()
        args = argparse.Namespace(model="Qwen/Qwen3-0.6B", model_path=None, context_length=None)
        with tempfile.TemporaryDirectory() as folder:
            built.tokenizer.save_pretrained(folder)  # the model's tokenizer folder, as vLLM loaded it
            built.mock.vllm_config.model_config.tokenizer = folder
            # vLLM's argument parser infers the device, which a host without a GPU does not have; the
            # parsed arguments go to from_engine_args as they are.
            with mock.patch.object(AsyncLLMEngine, "from_engine_args", autospec=True, return_value=built.mock) as made, \
                    mock.patch.object(adapter, "parse_engine_args", return_value=mock.sentinel.engine_args) as parsed:
                served = asyncio.run(adapter.create(args, ["--enforce-eager"]))
        served.kv_relay.close()
        made.assert_called_once_with(mock.sentinel.engine_args)
        self.assertIs(served.engine, built.mock)
        self.assertIs(served.tokenizer, built.tokenizer)
        self.assertEqual(served.model_dir, os.path.realpath(folder))  # the frontend templates and tokenizes with it
        self.assertIn("--kv-events-config", parsed.call_args.args[0])
        self.assertEqual(served.kv_events.block_size, 32)  # the frontend hashes prompts in vLLM's blocks

    def test_every_request_shape(self):
        """Each request the frontend can send, through the worker and the adapter onto the engine:
        vLLM's SamplingParams accepts what the adapter builds, and the client gets every choice."""
        for name, request in request_shapes().items():
            with self.subTest(name):
                built = RecordingEngine(flat_logprobs=name == "top logprobs")
                frames = serve(adapter.VllmEngine(built.mock, built.tokenizer), request, "vllm")
                self.assertEqual([frame for frame in frames if "error" in frame], [])
                [(prompt, params)] = built.calls  # one engine request, also for n choices
                self.check_params(request, params)
                wanted = expected_prompt(request, built.tokenizer)
                self.assertEqual(prompt, wanted if isinstance(wanted, str) else {"prompt_token_ids": wanted})
                answers = choices(frames)
                self.assertEqual(sorted(answers), list(range(request.n)))
                prompt_ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else built.tokenizer.encode(prompt)
                for answer in answers.values():
                    self.assertEqual((answer["text"], answer["tokens"], answer["finish"], answer["prompt_tokens"]),
                                     ("".join(ANSWER), 3, "stop", len(prompt_ids) - request.resumed_tokens))
                    self.check_logprobs(request, answer["logprobs"])

    def check_params(self, request: GenerateRequest, params: Any) -> None:
        self.assertIsInstance(params, SamplingParams)
        self.assertEqual(params.output_kind, RequestOutputKind.DELTA)
        given = {"max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                 "seed": request.seed, "logprobs": request.logprobs}
        self.assertEqual({key: getattr(params, key) for key, value in given.items() if value is not None},
                         {key: value for key, value in given.items() if value is not None})
        self.assertEqual(params.stop, request.stop)
        self.assertEqual(params.n, 1 if request.temperature == 0 else request.n)  # greedy n: one answer, n times
        schema = request.output_schema()
        structured = getattr(params, "structured_outputs", None) or getattr(params, "guided_decoding", None)
        self.assertEqual(structured.json if structured else None, schema)

    def check_logprobs(self, request: GenerateRequest, entries: list[dict[str, Any]]) -> None:
        if request.logprobs is None:
            self.assertEqual(entries, [])
            return
        self.assertEqual([entry["token"] for entry in entries], list("Hi!"))
        for entry in entries:
            self.assertEqual(len(entry["top"]), request.logprobs)
            self.assertEqual([top["logprob"] for top in entry["top"]],
                             sorted((top["logprob"] for top in entry["top"]), reverse=True))

    def test_greedy_n_is_refused_by_vllm_and_served_by_the_worker(self):
        """vLLM refuses n > 1 at temperature 0; the worker asks for one answer and sends it n times."""
        with self.assertRaisesRegex(Exception, "n must be 1 when using greedy sampling"):
            SamplingParams(n=2, temperature=0.0)
        built = RecordingEngine()
        frames = serve(adapter.VllmEngine(built.mock, built.tokenizer),
                       GenerateRequest(model="m", prompt="Hello", n=2, temperature=0.0), "vllm")
        self.assertEqual({index: answer["text"] for index, answer in choices(frames).items()}, {0: "Hi!", 1: "Hi!"})

    def test_a_request_vllm_refuses_is_a_400(self):
        """vLLM refuses a prompt longer than the model's context with its own error (input_processor:
        VLLMValidationError in 0.31.0, ValueError before) and a sampling value out of range in
        SamplingParams: the client gets a 400 with vLLM's reason, as from vLLM's server, not a 500."""
        try:
            from vllm.exceptions import VLLMValidationError as TooLong
        except ImportError:
            TooLong = ValueError
        built = RecordingEngine()
        built.mock.generate.side_effect = TooLong(
            "The decoder prompt (length 5000) is longer than the maximum model length of 4096.")
        frames = serve(adapter.VllmEngine(built.mock, built.tokenizer), GenerateRequest(model="m", prompt="Hello"),
                       "vllm")
        [error] = [frame for frame in frames if "error" in frame]
        self.assertEqual(error["status"], 400)
        self.assertIn("longer than the maximum model length of 4096", error["error"])
        frames = serve(adapter.VllmEngine(built.mock, built.tokenizer),
                       GenerateRequest(model="m", prompt="Hello", top_p=0.0), "vllm")
        self.assertEqual([frame["status"] for frame in frames if "error" in frame], [400])

    def test_every_finish_reason_is_openais(self):
        """Each of vLLM's finish reasons (its own list) ends a choice with OpenAI's stop or length;
        "error", a request that failed inside the engine, reaches the client as a 500."""
        from vllm.v1.engine import FINISH_REASON_STRINGS

        for reason in FINISH_REASON_STRINGS:
            with self.subTest(reason):
                built = RecordingEngine(finish=reason)
                frames = serve(adapter.VllmEngine(built.mock, built.tokenizer),
                               GenerateRequest(model="m", prompt="Hello"), "vllm")
                if reason == "error":
                    self.assertEqual([frame["status"] for frame in frames if "error" in frame], [500])
                else:
                    self.assertIn(choices(frames)[0]["finish"], OPENAI_FINISH_REASONS)
                    self.assertEqual(choices(frames)[0]["finish"], "length" if reason == "length" else "stop")


if __name__ == "__main__":
    unittest.main()
