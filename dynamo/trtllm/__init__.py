"""The TensorRT-LLM worker: a thin adapter over tensorrt_llm.LLM (the LLM API)."""
