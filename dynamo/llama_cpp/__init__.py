"""The llama.cpp worker (llama-cpp-python): GGUF models on the CPU or a GPU."""
