"""``python -m deleverage.cli``: the same as the ``deleverage`` command."""

import sys

from . import main

sys.exit(main())
