"""``python -m logitlens``: the same as the ``logitlens`` command."""

import sys

from logitlens._entry import main

if __name__ == "__main__":
    sys.exit(main())
