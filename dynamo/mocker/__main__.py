"""python -m dynamo.mocker --model-name NAME [--ttft-ms MS] [--itl-ms MS]"""

from dynamo.mocker.engine import add_arguments, create
from dynamo.runtime import worker


def main(argv: list[str] | None = None) -> None:
    worker.main("mocker", "python -m dynamo.mocker", "A simulated engine for tests and load: no model, no GPU.",
                create, add_arguments, engine_flags=False, argv=argv)


if __name__ == "__main__":
    main()
