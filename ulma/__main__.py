"""``python -m ulma``: see `ulma.cli`."""
import sys

from ulma.cli import main

sys.exit(main())
