"""``python -m benchmarks``: the same as ``glocal bench``."""

import sys

from benchmarks.run import main

sys.exit(main())
