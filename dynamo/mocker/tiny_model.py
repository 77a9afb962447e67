"""python -m dynamo.mocker.tiny_model DIR: a small model folder for the mocker (and upstream's): a
byte-level BPE tokenizer.json trained here, a ChatML chat template that lays out tools, and a small
llama config.json. No weights: the mocker reads none. Serve it with
`python -m dynamo.mocker --model-path DIR --model-name tiny`."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
    {{- '# Tools\\n<tools>' }}
    {%- for tool in tools %}{{- '\\n' + tool | tojson }}{%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}
        {%- for call in message.tool_calls or [] %}
            {{- '\\n<tool_call>' + call.function | tojson + '</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
          "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 8192,
          "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 2}


def corpus(seed: int = 0) -> list[str]:
    """English-like text to learn merges from."""
    rng = random.Random(seed)
    words = ("the model says hello and then thinks about tokens while a frontend routes requests to workers that "
             "stream answers back system user assistant tool question prompt cache block prefix route").split()
    syllables = ["ka", "lo", "mi", "ru", "te", "zo"]
    words += [f"{syllable}{number}" for syllable in syllables for number in range(50)]
    return [" ".join(rng.choices(words, k=40)) for _ in range(2000)]


def write(folder: Path, vocab_size: int = 2048) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHAT_TEMPLATE, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=1))
    (folder / "config.json").write_text(json.dumps({**CONFIG, "vocab_size": tokenizer.get_vocab_size()}, indent=1))
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m dynamo.mocker.tiny_model DIR")
    print(write(Path(sys.argv[1])))
