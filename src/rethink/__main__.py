"""`python -m rethink ...` runs the command-line interface."""

import sys

from rethink.cli import main

sys.exit(main())
