"""`python -m healthmon.cli`: the `healthmon` command without its script."""

import sys

from healthmon.cli import main

sys.exit(main())
