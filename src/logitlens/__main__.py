"""``python -m logitlens``: the same as the ``logitlens`` command."""

import sys

from ._entry import main

if __name__ == "__main__":
    sys.exit(main())
