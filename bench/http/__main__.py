"""`python -m bench.http`: checks on time under API load, and the API at 1,000 services."""

import sys

from bench.http.run import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
