"""``python -m hutong.cli``: the same as the ``hutong`` console script."""

import sys

from hutong.cli import main

sys.exit(main())
