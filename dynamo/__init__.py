"""Dynamo: build, distribution and host checks for an LLM-serving runtime, driven by one support matrix."""
