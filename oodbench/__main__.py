"""``python -m oodbench`` runs the CLI."""

import sys

from oodbench.cli import main

sys.exit(main())
