"""The relay of vLLM's and SGLang's KV events into ours (runtime/engine_kv_events.py), and the
tokenizer folder GPU workers advertise. The engines' real publishers are in tests/contract."""

from __future__ import annotations

import json

from dynamo.runtime.engine_kv_events import BlockTranslator, relayed
from dynamo.runtime.kv_events import KvPublisher, block_hashes
from dynamo.runtime.worker import tokenizer_folder


class Frames:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def send(self, frame: bytes) -> None:
        self.events.append(json.loads(frame)["kv"])


def translator() -> tuple[BlockTranslator, Frames]:
    publisher = KvPublisher(16, lambda: [])
    frames = Frames()
    publisher.subscribers.add(frames)
    return BlockTranslator(publisher), frames


def stored(hashes: list, tokens: list[int], parent=None, medium: str | None = "GPU") -> dict:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent, "token_ids": tokens,
            "block_size": 2, "medium": medium}


def test_one_of_our_blocks_lives_while_any_engine_block_with_its_tokens_does():
    """The same tokens under two engine hashes (two KV cache groups) are one block to the frontend."""
    relay, frames = translator()
    ours = block_hashes([1, 2, 3, 4], 2)
    relay.apply(stored([b"a", b"b"], [1, 2, 3, 4]))
    relay.apply(stored([b"group 1"], [1, 2]))
    relay.apply(stored([b"b2"], [3, 4], parent=b"group 1"))
    relay.apply({"type": "BlockRemoved", "block_hashes": [b"a", b"b"], "medium": "GPU"})
    assert frames.events == [{"block_size": 2, "stored": ours}]  # nothing new, nothing gone
    relay.apply({"type": "BlockRemoved", "block_hashes": [b"b2"]})
    assert frames.events[-1] == {"block_size": 2, "removed": ours[1:]}
    assert relay.held() == ours[:1]


def test_blocks_the_frontend_cannot_reach_are_not_told():
    relay, frames = translator()
    relay.apply(stored([b"x"], [5, 6], parent=b"never stored"))  # its parent's event was lost
    relay.apply(stored([b"y"], [1, 2], medium="CPU"))  # offloaded: not what a prefill reuses
    for key, value in (("lora_name", "adapter"), ("lora_id", 3), ("cache_salt", "s"), ("extra_keys", [None, ("mm", 1)])):
        relay.apply({**stored([b"k"], [1, 2]), key: value})  # blocks no request of the frontend's can reuse
    relay.apply(stored([b"k2"], [3, 4], parent=b"k"))  # nor can their children
    relay.apply({"type": "BlockRemoved", "block_hashes": [b"unknown"]})
    assert frames.events == [] and relay.held() == []
    relay.apply(stored([b"z"], [1, 2]))
    relay.apply({"type": "AllBlocksCleared"})
    assert frames.events[-1] == {"block_size": 2, "clear": True} and relay.held() == []


def test_a_users_own_kv_events_config_wins():
    flags = ["--kv-events-config", '{"publisher": "zmq", "endpoint": "tcp://*:5557"}']
    assert relayed(flags, 16, object) == (None, flags)
    assert relayed(["--kv-events-config={}"], 16, object)[0] is None


def test_the_tokenizer_folder_a_worker_advertises(tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = tmp_path / "model"
    model.mkdir()
    assert tokenizer_folder(str(model)) == ""  # no tokenizer.json: the worker gets chats
    (model / "tokenizer.json").write_text("{}")
    assert tokenizer_folder(str(model)) == str(model)
    # A model name: its snapshot in the Hugging Face cache, where the engine downloaded it.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert tokenizer_folder("org/name") == ""
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.json").write_text("{}")
    (tmp_path / "hub" / "models--org--name" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--name" / "refs" / "main").write_text("abc123")
    assert tokenizer_folder("org/name") == str(snapshot)
    assert tokenizer_folder("not a name!") == "" and tokenizer_folder(None) == ""
