"""``python -m pipeline`` runs the ``anatomodel`` command line."""

import sys

from pipeline.cli import main

sys.exit(main())
