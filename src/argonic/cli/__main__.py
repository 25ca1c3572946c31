"""`python -m argonic.cli`: the same as the `argonic` command."""

import sys

from argonic.cli import main

sys.exit(main())
