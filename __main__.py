"""``python -m vitserve``: the same command line as the ``vitserve`` console script."""

import sys

from vitserve.admin.main import main

sys.exit(main())
