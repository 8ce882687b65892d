"""`python -m generators.cli`: the `zoo` command."""

import sys

from generators.cli import main

sys.exit(main())
