"""``python -m datarax.bench``: the ``datarax-bench`` command without its script.

For environments that run from the source tree and cannot install the console
script (``scripts/gpu_bench.sh``).
"""

import sys

from datarax.bench._cli import main

sys.exit(main())
