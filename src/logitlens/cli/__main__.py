"""``python -m logitlens.cli``: the ``logitlens`` command."""

import sys

from logitlens.cli import main

sys.exit(main())
