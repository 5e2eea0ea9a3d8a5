"""What a run was measured on: the machine, JAX's backend and every version."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax

from datarax.bench._adapter import ADAPTERS

_DISTRIBUTIONS = (
    "jax",
    "jaxlib",
    "flax",
    "numpy",
    "datarax-core",
    "datarax-sources",
    "datarax-bench",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, platform and JAX's backend and devices."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in jax.devices()],
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(adapters: Iterable[str] = ()) -> dict[str, str | None]:
    """Versions of Python, JAX, Flax, datarax and each adapter's peer library.

    Peers are looked up by distribution metadata, never imported; a peer that is
    not installed maps to ``None``.
    """
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for distribution in _DISTRIBUTIONS:
        found[distribution] = _version(distribution)
    owners = importlib.metadata.packages_distributions()
    for name in adapters:
        cls = ADAPTERS.get(name)
        for module in cls.modules if cls is not None else ():
            for distribution in owners.get(module, [module]):
                found.setdefault(distribution, _version(distribution))
    return found
