"""python -m dynamo.vllm MODEL [--context-length N] [vLLM engine flags]"""

from dynamo.runtime import worker
from dynamo.vllm.engine import create


def main(argv: list[str] | None = None) -> None:
    worker.main("vllm", "python -m dynamo.vllm", "Serve a model with vLLM; vLLM's engine flags pass through.",
                create, argv=argv)


if __name__ == "__main__":
    main()
