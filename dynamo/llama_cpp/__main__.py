"""python -m dynamo.llama_cpp --model-path MODEL.gguf [--context-length N] [--n-gpu-layers N]"""

from dynamo.llama_cpp.engine import add_arguments, create
from dynamo.runtime import worker


def main(argv: list[str] | None = None) -> None:
    worker.main("llama_cpp", "python -m dynamo.llama_cpp", "Serve a GGUF model with llama.cpp.",
                create, add_arguments, engine_flags=False, argv=argv)


if __name__ == "__main__":
    main()
