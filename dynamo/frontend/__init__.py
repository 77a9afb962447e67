"""The OpenAI-compatible frontend: HTTP (or a terminal chat) in front of the workers."""
