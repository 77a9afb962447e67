"""The SGLang worker: a thin adapter over sglang.Engine."""
