"""``python -m vgg``: the command line (see :mod:`vgg.cli`)."""
import sys

from vgg.cli import main

sys.exit(main())
