"""`python -m bench.history`: fill a database to volume and time the history API."""

import sys

from bench.history.run import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
