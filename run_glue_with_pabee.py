#!/usr/bin/env python
"""The reference PABEE script's command line, on the pabee package: see `pabee.cli.seed_main`."""

import sys

from pabee.cli import seed_main

if __name__ == "__main__":
    sys.exit(seed_main())
