"""`python -m covnoise`: the same as the `covnoise` console script (covnoise.cli.main)."""

import sys

from covnoise.cli.main import main

sys.exit(main())
