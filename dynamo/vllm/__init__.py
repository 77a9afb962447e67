"""The vLLM worker: a thin adapter over vLLM's AsyncLLMEngine."""
