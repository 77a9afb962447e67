"""Preprocessing in the frontend: the model folder's chat template and tokenizer, workers that
receive token ids, and usage counted from them."""

from __future__ import annotations

import json

import pytest
import transformers  # the reference implementation: a test dependency, so never a silent skip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_frontend import client, deployment, http, wait_for_instances  # noqa: F401 (fixture)
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

from dynamo.frontend.preprocess import Preprocessor, _fast_tokenizer
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


def tokenizer_folder(folder, pre_tokenizer, normalizer=None, lstrip=False, truncate=False):
    """A model folder whose tokenizer.json is a BPE trained here with these parts (the tiny model's
    chat template and special tokens; `lstrip`: <|im_end|> takes the whitespace before it)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    if normalizer:
        tokenizer.normalizer = normalizer
    special = [AddedToken(token, special=True, lstrip=lstrip and token == "<|im_end|>") for token in tiny_model.SPECIAL]
    tokenizer.train_from_iterator(tiny_model.corpus(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if "ByteLevel" in str(pre_tokenizer) else []))
    if truncate:
        tokenizer.enable_truncation(8)
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": tiny_model.CHAT_TEMPLATE}))
    return folder


# Each kind of tokenizer; whether the tokens of the pieces between its added tokens may be kept; whether
# fastokens encodes it (0.3.5 has byte-level BPE, as Llama 3's, Qwen's and DeepSeek's; no NFKC, no Metaspace).
TOKENIZERS = {
    "byte-level BPE (the tiny model's)": (lambda folder: tiny_model.write(folder), True, True),
    "byte-level with a prefix space, NFKC and lowercase, truncating to 8": (lambda folder: tokenizer_folder(
        folder, pre_tokenizers.ByteLevel(add_prefix_space=True),
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), truncate=True), True, False),
    "byte-level with a prefix space and lowercase, truncating to 8": (lambda folder: tokenizer_folder(
        folder, pre_tokenizers.ByteLevel(add_prefix_space=True), normalizers.Lowercase(), truncate=True), True, True),
    "Metaspace, always prepended": (lambda folder: tokenizer_folder(
        folder, pre_tokenizers.Metaspace(prepend_scheme="always")), True, False),
    "Metaspace, first piece only (Llama's)": (lambda folder: tokenizer_folder(
        folder, pre_tokenizers.Sequence([pre_tokenizers.Metaspace(prepend_scheme="first")])), False, False),
    "byte-level, <|im_end|> strips the space before it": (lambda folder: tokenizer_folder(
        folder, pre_tokenizers.ByteLevel(add_prefix_space=False), lstrip=True), False, True),
}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def kind(request, tmp_path_factory):
    make, splits, fast = TOKENIZERS[request.param]
    folder = make(tmp_path_factory.mktemp("tokenizer") / "model")
    whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
    whole.no_truncation()  # transformers' count: every token of the text
    return Preprocessor(folder), whole, splits, fast


def test_fastokens_is_checked_against_tokenizers_at_load(model_dir, tmp_path, caplog):
    """A sample goes through both when the tokenizer loads: where fastokens' ids differ from tokenizers'
    (here tokenizers reads another, lowercasing tokenizer.json), the frontend keeps to tokenizers."""
    other = tokenizer_folder(tmp_path / "lowercase", pre_tokenizers.ByteLevel(add_prefix_space=True), normalizers.Lowercase())
    assert _fast_tokenizer(model_dir / "tokenizer.json", Tokenizer.from_file(str(model_dir / "tokenizer.json")))
    assert _fast_tokenizer(model_dir / "tokenizer.json", Tokenizer.from_file(str(other / "tokenizer.json"))) is None
    assert "fastokens encodes it otherwise than tokenizers" in caplog.text


def test_fastokens_encodes_what_it_reads_and_tokenizers_the_rest(kind):
    """fastokens (a dependency of ours) takes the tokenizers it reads whole, tokenizers the rest; so the
    property tests here check its ids against tokenizers' own."""
    preprocessor, _, _, fast = kind
    assert (preprocessor.fast is not None) == fast


PIECES = st.one_of(st.sampled_from(tiny_model.SPECIAL), st.sampled_from(["user", "\n", " ", "  ", "\t", "'s", "’"]),
                   st.text(alphabet="ab kalomi ZO01é中!?\n'", max_size=30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.lists(PIECES, max_size=12).map("".join), min_size=1, max_size=4))
def test_kept_tokens_are_the_whole_texts(kind, texts):
    """Whatever was tokenized before, a text's tokens are those of the whole text at once."""
    preprocessor, whole, _, _ = kind
    for text in texts + texts[::-1]:
        assert preprocessor.tokens(text) == whole.encode(text, add_special_tokens=False).ids


def test_tokenizers_whose_pieces_depend_on_their_place_are_tokenized_whole(kind):
    """The condition for keeping the pieces' tokens: where it fails, pieces tokenized alone differ."""
    preprocessor, whole, splits, _ = kind
    assert preprocessor._splits == splits
    text = "<|im_start|>user\nhello model <|im_end|>\n<|im_start|>assistant\n"
    pieces = [token for piece in preprocessor._added.split(text) if piece
              for token in whole.encode(piece, add_special_tokens=False).ids]
    assert (pieces == whole.encode(text, add_special_tokens=False).ids) == splits
