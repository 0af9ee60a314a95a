"""``python -m glocal`` runs the command line."""

import sys

from glocal.cli import main

sys.exit(main())
