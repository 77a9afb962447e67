"""python -m dynamo.sglang MODEL [SGLang server arguments]; also python -m dynamo.sglang.worker"""

from dynamo.runtime import worker
from dynamo.sglang.engine import create


def main(argv: list[str] | None = None) -> None:
    worker.main("sglang", "python -m dynamo.sglang", "Serve a model with SGLang; its server arguments pass through.",
                create, argv=argv)


if __name__ == "__main__":
    main()
