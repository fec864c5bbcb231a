"""``python -m ovperc`` runs the command line."""

import sys

from ovperc.cli import main

sys.exit(main())
