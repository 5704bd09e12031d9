"""`python -m load SCENARIO ...`: the `cxgw load` commands without the main CLI."""

import sys

from load.cli import main

if __name__ == "__main__":  # a spawned generator process (--processes) imports this
    sys.exit(main())
