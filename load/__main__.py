"""`python -m load SCENARIO ...`: the `cxgw load` commands without the main CLI."""

import sys

from load.cli import main

sys.exit(main())
