"""``python -m vogflow.cli``: the ``vogflow`` command (torchrun starts ranks this way)."""

import sys

from vogflow.cli.main import main

sys.exit(main())
