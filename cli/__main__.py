"""`python -m gossiprec.cli`: the same program as the `gossiprec` command."""

import sys

from gossiprec.cli.main import main

sys.exit(main())
