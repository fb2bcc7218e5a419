"""`python -m bench.page`: a fleet's database, then the status page's times."""

import sys

from bench.page.run import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
