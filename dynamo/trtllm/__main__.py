"""python -m dynamo.trtllm MODEL [--tensor-parallel-size N] [--extra-engine-args FILE.yaml]"""

from dynamo.runtime import worker
from dynamo.trtllm.engine import add_arguments, create


def main(argv: list[str] | None = None) -> None:
    worker.main("trtllm", "python -m dynamo.trtllm", "Serve a model with TensorRT-LLM's LLM API.",
                create, add_arguments, engine_flags=False, argv=argv)


if __name__ == "__main__":
    main()
