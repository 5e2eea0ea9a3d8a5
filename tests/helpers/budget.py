"""How many examples a property test draws in this test pass."""

from __future__ import annotations

import os

#: Examples per property test: 8 in the first pass; scripts/test.sh gives the
#: second (the other jax and flax versions) fewer.
EXAMPLES = int(os.environ.get("DATARAX_HYPOTHESIS_EXAMPLES", "8"))


def examples(first_pass: int) -> int:
    """A test's own budget of ``first_pass`` examples, scaled to this pass (>= 2)."""
    return max(2, first_pass * EXAMPLES // 8)
