"""`python -m gateway` is `cxgw`."""

import sys

from gateway.cli.main import main

sys.exit(main())
