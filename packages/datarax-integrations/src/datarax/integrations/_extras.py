"""Import guards for the optional backends of ``datarax-integrations``."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(extra: str, *modules: str) -> tuple[ModuleType, ...]:
    """Imports ``modules`` for the backend ``extra``, or says how to install them.

    Raises:
        ImportError: naming the missing module and the exact command that
            installs it, ``pip install "datarax-integrations[<extra>]"``.
    """
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as err:
            raise ImportError(
                f"datarax.integrations.{extra} needs the {name!r} package, which is "
                f'not installed; install it with: pip install "datarax-integrations'
                f'[{extra}]"'
            ) from err
    return tuple(loaded)
