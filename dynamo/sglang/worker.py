"""`python -m dynamo.sglang.worker`, the name the README uses: the same worker as python -m dynamo.sglang."""

from dynamo.sglang.__main__ import main

if __name__ == "__main__":
    main()
