"""The SGLang adapter against the installed SGLang: an engine made by create_autospec of SGLang's own
Engine class (so a keyword async_generate does not take, or a sync/async mismatch, fails as it would
on a GPU), each request's sampling parameters and arguments checked as SGLang's TokenizerManager
checks them (SamplingParams, normalize, verify; GenerateReqInput), and finish reasons made by SGLang's
own FINISH_* classes. Standard library only: it runs inside the image with
`python -m unittest discover -s tests/contract -v`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import unittest
from http import HTTPStatus
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

sglang, MISSING = engine("sglang", "sglang")
if sglang is not None:
    from sglang.srt.disaggregation.kv_events import KVEventsConfig
    from sglang.srt.entrypoints.engine import Engine
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH, FINISH_MATCHED_STR, FINISH_MATCHED_TOKEN
    from sglang.srt.sampling.sampling_params import SamplingParams
    from sglang.srt.server_args import ServerArgs

    from dynamo.sglang import engine as adapter

ANSWER = ["Hi", "!"]  # each choice's answer, in two outputs (SGLang streams the whole text so far)


class RecordingEngine:
    """create_autospec of SGLang's Engine whose async_generate streams what SGLang's TokenizerManager
    streams: per choice (tagged with its `index` when n > 1) the text so far and its meta_info, the
    last with a finish_reason; logprobs as (logprob, token id, None) tuples, since no text is asked for."""

    def __init__(self, finish: dict[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer()
        self.mock = mock.create_autospec(Engine, instance=True)
        self.mock.tokenizer_manager = mock.Mock(tokenizer=self.tokenizer)  # set by Engine.__init__
        self.mock.async_generate.side_effect = self.async_generate
        self.calls: list[dict[str, Any]] = []
        self.finish = finish or FINISH_MATCHED_TOKEN(matched=self.tokenizer.eos_token_id).to_json()

    async def async_generate(self, **kwargs):
        self.calls.append(kwargs)
        self.check(kwargs)
        return self.stream(kwargs)

    def check(self, kwargs: dict[str, Any]) -> None:
        """What SGLang does with the arguments before it generates: GenerateReqInput and its
        normalization, then SamplingParams with normalize and verify (TokenizerManager)."""
        request = GenerateReqInput(text=kwargs.get("prompt"), input_ids=kwargs.get("input_ids"),
                                   sampling_params=kwargs["sampling_params"], stream=kwargs["stream"],
                                   return_logprob=kwargs.get("return_logprob", False),
                                   top_logprobs_num=kwargs.get("top_logprobs_num"))
        request.normalize_batch_and_arguments()
        params = SamplingParams(**kwargs["sampling_params"])
        params.normalize(self.tokenizer)
        params.verify(len(self.tokenizer))

    async def stream(self, kwargs: dict[str, Any]):
        prompt = kwargs.get("input_ids") or self.tokenizer.encode(kwargs["prompt"])
        n = kwargs["sampling_params"].get("n", 1)
        wanted = kwargs.get("top_logprobs_num") or 0
        chosen: list[list[tuple]] = [[] for _ in range(n)]
        tops: list[list[list[tuple]]] = [[] for _ in range(n)]
        text = ""
        for step, piece in enumerate(ANSWER):
            text += piece
            last = step == len(ANSWER) - 1
            for index in range(n):
                for token_id in self.tokenizer.encode(piece, add_special_tokens=False):
                    chosen[index].append((-1.0, token_id, None))
                    tops[index].append([(-0.5 - rank / 10, token_id + 1 + rank, None) for rank in range(wanted)])
                meta: dict[str, Any] = {"id": f"r{index}", "prompt_tokens": len(prompt),
                                        "completion_tokens": len(chosen[index]),
                                        "finish_reason": self.finish if last else None}
                if kwargs.get("return_logprob"):
                    meta |= {"output_token_logprobs": list(chosen[index]), "output_top_logprobs": list(tops[index])}
                output = {"text": text, "output_ids": [], "meta_info": meta}
                if n > 1:
                    output["index"] = index
                yield output


@unittest.skipUnless(sglang, MISSING)
class SglangContract(unittest.TestCase):
    def test_create_builds_the_engine_as_sglang_takes_it(self):
        """dynamo.sglang.engine.create: SGLang's own ServerArgs from our flags, Engine(server_args=...)."""
        built = RecordingEngine()
        with tempfile.TemporaryDirectory() as folder:
            built.tokenizer.save_pretrained(folder)  # the model's folder
            args = argparse.Namespace(model=None, model_path=folder, context_length=4096)

            async def create() -> Any:  # as the worker calls it: in its event loop
                served = adapter.create(args, ["--mem-fraction-static", "0.7", "--page-size", "16"])
                served.kv_relay.close()
                return served

            # ServerArgs.__post_init__ probes the accelerator and loads the model's config.json (SGLang 0.5.11),
            # neither of which a host without a GPU and a tokenizer-only folder has: it is left out, and the
            # fields are those SGLang's own parser made of our flags.
            with mock.patch.object(sglang, "Engine", mock.create_autospec(Engine, return_value=built.mock)) as made, \
                    mock.patch.object(ServerArgs, "__post_init__", autospec=True):
                served = asyncio.run(create())
        server_args = made.call_args.kwargs["server_args"]
        self.assertEqual((server_args.model_path, server_args.context_length, server_args.mem_fraction_static),
                         (folder, 4096, 0.7))
        self.assertIs(served.tokenizer, built.tokenizer)
        self.assertEqual(served.model_dir, os.path.realpath(folder))  # the frontend templates and tokenizes with it
        events = KVEventsConfig.from_cli(server_args.kv_events_config)  # as SGLang's scheduler reads it
        self.assertEqual((events.publisher, events.endpoint), ("zmq", served.kv_relay.endpoint))
        self.assertEqual(served.kv_events.block_size, 16)  # SGLang's page: the frontend hashes prompts in it

    def test_every_request_shape(self):
        """Each request the frontend can send, through the worker and the adapter onto the engine's
        async_generate, whose signature has no return_text_in_logprobs (0.5.6.post2, 0.5.21)."""
        for name, request in request_shapes().items():
            with self.subTest(name):
                built = RecordingEngine()
                frames = serve(adapter.SglangEngine(built.mock), request, "sglang")
                self.assertEqual([frame for frame in frames if "error" in frame], [])
                kwargs = built.calls[0]
                self.check_sampling(request, kwargs["sampling_params"])
                if request.seed is not None and request.n > 1:  # one request per choice, each its own seed
                    self.assertEqual([call["sampling_params"]["sampling_seed"] for call in built.calls],
                                     [request.seed + index for index in range(request.n)])
                else:
                    self.assertEqual(len(built.calls), 1)
                wanted = expected_prompt(request, built.tokenizer)
                self.assertEqual(kwargs.get("prompt") if isinstance(wanted, str) else kwargs.get("input_ids"), wanted)
                prompt = kwargs.get("input_ids") or built.tokenizer.encode(kwargs["prompt"])
                answers = choices(frames)
                self.assertEqual(sorted(answers), list(range(request.n)))
                for answer in answers.values():
                    self.assertEqual((answer["text"], answer["tokens"], answer["finish"], answer["prompt_tokens"]),
                                     ("".join(ANSWER), 3, "stop", len(prompt) - request.resumed_tokens))
                    self.check_logprobs(request, answer["logprobs"])

    def check_sampling(self, request: GenerateRequest, params: dict[str, Any]) -> None:
        expected = {"max_new_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                    "sampling_seed": request.seed, "stop": request.stop or None,
                    "n": None if request.n == 1 or request.temperature == 0 or request.seed is not None else request.n}
        self.assertEqual({key: params.get(key) for key in expected}, expected)
        schema = request.output_schema()
        self.assertEqual(params.get("json_schema"), None if schema is None else json.dumps(schema))

    def check_logprobs(self, request: GenerateRequest, entries: list[dict[str, Any]]) -> None:
        if request.logprobs is None:
            self.assertEqual(entries, [])
            return
        self.assertEqual([entry["token"] for entry in entries], list("Hi!"))  # decoded by the adapter
        for entry in entries:
            self.assertEqual(len(entry["top"]), request.logprobs)

    def test_every_finish_reason_is_openais(self):
        """SGLang's finish reasons, made by its own classes: stop and length end the choice; an abort
        with a status code is an error with that status's class (400: the request's fault), as
        SGLang's own server answers it."""
        reasons = {"matched token": (FINISH_MATCHED_TOKEN(matched=2).to_json(), "stop"),
                   "matched stop string": (FINISH_MATCHED_STR(matched="END").to_json(), "stop"),
                   "length": (FINISH_LENGTH(length=3).to_json(), "length"),
                   "abort by a client": (FINISH_ABORT().to_json(), "stop"),
                   "abort of a bad request": (FINISH_ABORT("too long", HTTPStatus.BAD_REQUEST).to_json(), 400),
                   "abort by the engine": (FINISH_ABORT("no memory", HTTPStatus.SERVICE_UNAVAILABLE).to_json(), 500)}
        for name, (reason, expected) in reasons.items():
            with self.subTest(name):
                built = RecordingEngine(finish=reason)
                frames = serve(adapter.SglangEngine(built.mock), GenerateRequest(model="m", prompt="Hello"), "sglang")
                if isinstance(expected, int):
                    [error] = [frame for frame in frames if "error" in frame]
                    self.assertEqual(error["status"], expected)
                    self.assertIn(reason["message"], error["error"])
                else:
                    self.assertIn(choices(frames)[0]["finish"], OPENAI_FINISH_REASONS)
                    self.assertEqual(choices(frames)[0]["finish"], expected)


if __name__ == "__main__":
    unittest.main()
