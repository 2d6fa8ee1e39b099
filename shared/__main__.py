"""``python -m shared``: same as the ``clientcert-audit`` command."""

import sys

from .cli import main

sys.exit(main())
