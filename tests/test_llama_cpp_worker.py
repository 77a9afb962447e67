"""The llama.cpp worker running a real (tiny, random) GGUF model on the CPU behind the frontend."""

from __future__ import annotations

import importlib.util

import pytest
import tiny_gguf
from conftest import require
from processes import Deployment
from test_frontend import client, http, wait_for_models


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    missing = [name for name in ("llama_cpp", "gguf", "numpy") if importlib.util.find_spec(name) is None]
    require(f"{', '.join(missing)} not installed (pip install '.[test,llama_cpp]')" if missing else None)
    return tiny_gguf.write(tmp_path_factory.mktemp("model") / "tiny-llama.gguf")


@pytest.fixture
def served(tmp_path, model_file):
    deployment = Deployment(tmp_path)
    url = deployment.frontend()
    deployment.start("dynamo.llama_cpp", "--model-path", str(model_file), "--context-length", "256")
    wait_for_models(url, {"tiny-llama"})  # the file's name without .gguf
    yield url
    deployment.stop()


def test_chat_and_completion_through_llama_cpp(served):
    api = client(served)
    chat = api.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=6, seed=5, temperature=0.8)
    again = api.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=6, seed=5, temperature=0.8)
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 6
    # The GGUF's chat template renders "<|user|>hi\n<|assistant|>": tokens for it plus BOS.
    assert chat.usage.prompt_tokens > 5
    assert chat.choices[0].message.content == again.choices[0].message.content  # the seed reached llama.cpp

    pieces = list(api.completions.create(model="tiny-llama", prompt="hello", max_tokens=5, seed=5, stream=True,
                                         stream_options={"include_usage": True}))
    text = "".join(piece.choices[0].text for piece in pieces if piece.choices)
    whole = api.completions.create(model="tiny-llama", prompt="hello", max_tokens=5, seed=5)
    assert text == whole.choices[0].text
    assert pieces[-1].usage.completion_tokens == 5 and pieces[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_context_overflow_is_a_400(served):
    code, answer, _ = http(served + "/v1/completions", {"model": "tiny-llama", "prompt": "word " * 300, "max_tokens": 4})
    assert code == 400 and "exceed the context length (256)" in answer["error"]["message"]
    # Without max_tokens the answer may fill the context, but a prompt that fills it alone is refused too.
    code, answer, _ = http(served + "/v1/completions", {"model": "tiny-llama", "prompt": "word " * 300})
    assert code == 400 and "exceed the context length (256)" in answer["error"]["message"]
    # The worker is still there for the next request.
    assert http(served + "/v1/completions", {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2})[0] == 200
