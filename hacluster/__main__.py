"""``python -m hacluster``: the same as the ``hacluster`` command."""

import sys

from hacluster.cli import main

sys.exit(main())
