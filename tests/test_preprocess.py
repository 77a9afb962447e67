"""Preprocessing in the frontend: the model folder's chat template and tokenizer, workers that
receive token ids, and usage counted from them."""

from __future__ import annotations

import pytest
import transformers  # the reference implementation: a test dependency, so never a silent skip
from test_frontend import client, deployment, http, wait_for_instances  # noqa: F401 (fixture)

from dynamo.frontend.preprocess import Preprocessor
from dynamo.mocker import tiny_model
from dynamo.runtime.protocol import GenerateRequest, RequestError  # noqa: E402

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello model"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model.write(tmp_path_factory.mktemp("tiny"))


def test_chat_template_as_transformers_renders_it(model_dir):
    preprocessor = Preprocessor(model_dir)
    assert preprocessor.chat_text(CHAT) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                            "<|im_start|>user\nhello model<|im_end|>\n<|im_start|>assistant\n")
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    text = preprocessor.chat_text(CHAT, tools)
    assert '\n{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}\n' in text


def test_template_errors_are_the_requests(tmp_path):
    folder = tiny_model.write(tmp_path / "strict")
    (folder / "chat_template.jinja").write_text("{{ raise_exception('only user messages') }}")  # wins over the config's
    with pytest.raises(RequestError, match="only user messages"):
        Preprocessor(folder).chat_text(CHAT)


def test_tokens_are_the_tokenizers_whatever_is_cached(model_dir):
    preprocessor = Preprocessor(model_dir)
    long = [{"role": "system", "content": "the model says hello " * 300}, {"role": "user", "content": "why?"}]
    for chat in (CHAT, long, long + [{"role": "assistant", "content": "<|im_start|> inside"}]):
        text = preprocessor.chat_text(chat)
        whole = preprocessor.tokenizer.encode(text, add_special_tokens=False).ids
        assert preprocessor.tokens(text) == whole
        assert preprocessor.tokens(text) == whole  # again, from the cache
    request = preprocessor.prepare(GenerateRequest(model="m", messages=CHAT))
    assert request.messages is None and request.prompt_token_ids == preprocessor.tokens(preprocessor.chat_text(CHAT))


def test_workers_get_token_ids_and_usage_counts_them(deployment, model_dir):  # noqa: F811
    url = deployment.frontend("--router-mode", "kv")
    deployment.mocker("tiny", "--model-path", str(model_dir), "--block-size", "4")
    wait_for_instances(url, 1)
    preprocessor = Preprocessor(model_dir)
    expected = len(preprocessor.tokens(preprocessor.chat_text(CHAT)))
    api = client(url)
    first = api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3)
    again = api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3)
    assert first.usage.prompt_tokens == expected != sum(len(m["content"].split()) + 2 for m in CHAT)
    assert (first.usage.prompt_tokens_details.cached_tokens, again.usage.prompt_tokens_details.cached_tokens) \
        == (0, expected - expected % 4)
    completion = api.completions.create(model="tiny", prompt="hello model", max_tokens=1)
    assert completion.usage.prompt_tokens == len(preprocessor.tokens("hello model"))
    status, body, _ = http(url + "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user"}]})
    assert status == 200 and body["usage"]["prompt_tokens"] == len(preprocessor.tokens(
        preprocessor.chat_text([{"role": "user", "content": ""}])))



def test_the_token_cache_keeps_to_its_size(model_dir, monkeypatch):
    from dynamo.frontend import preprocess

    monkeypatch.setattr(preprocess, "CACHED_CHARACTERS", 1000)
    preprocessor = Preprocessor(model_dir)
    for number in range(20):
        text = preprocessor.chat_text([{"role": "user", "content": f"question {number} " * 20}])
        assert preprocessor.tokens(text) == preprocessor.tokenizer.encode(text, add_special_tokens=False).ids
    assert 0 < sum(map(len, preprocessor._pieces)) <= 1000


TOOLS = [{"type": "function", "function": {"name": "weather", "description": "é", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
CHATS = [CHAT, [{"role": "user", "content": "hello <|im_start|> x"}],
         [{"role": "user", "content": "weather?"},
          {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
              "name": "weather", "arguments": '{"city": "Oslo"}'}}]},
          {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]]


@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("chat", CHATS)
def test_same_text_and_tokens_as_transformers(model_dir, chat, tools):
    """transformers' apply_chat_template is the reference."""
    reference = transformers.AutoTokenizer.from_pretrained(model_dir)
    preprocessor = Preprocessor(model_dir)
    text = preprocessor.chat_text(chat, tools)
    assert text == reference.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=True)
    ids = reference.apply_chat_template(chat, tools=tools, tokenize=True, add_generation_prompt=True)
    assert preprocessor.tokens(text) == list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_a_plain_prompt_gets_the_tokenizers_special_tokens_as_engines_add_them(tmp_path):
    """A completion's prompt text: the engines (vLLM, SGLang, llama.cpp) tokenize it with the model's
    special tokens (a BOS, where it has one); the frontend, sending ids instead, adds the same."""
    from tokenizers import processors

    folder = tiny_model.write(tmp_path / "bos")
    preprocessor = Preprocessor(folder)
    preprocessor.tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", preprocessor.tokenizer.token_to_id("<|endoftext|>"))])
    preprocessor.tokenizer.save(str(folder / "tokenizer.json"))
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    prepared = Preprocessor(folder).prepare(GenerateRequest(model="m", prompt="hello model"))
    assert prepared.prompt_token_ids == reference("hello model").input_ids
    assert prepared.prompt_token_ids[0] == reference.convert_tokens_to_ids("<|endoftext|>")
