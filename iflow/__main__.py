"""``python -m iflow`` is the ``iflow`` command; ``torchrun --nproc_per_node N -m iflow train ...`` trains data-parallel."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
