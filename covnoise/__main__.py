"""`python -m covnoise`: see covnoise.cli."""

import sys

from covnoise.cli import main

sys.exit(main())
