"""``python -m alpha_evolve`` is the ``alpha-evolve`` command."""

import sys

from alpha_evolve.cli import main

sys.exit(main())
