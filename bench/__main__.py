"""`python -m bench`: run the benchmark suite (see bench/README.md)."""

import sys

from bench.run import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
