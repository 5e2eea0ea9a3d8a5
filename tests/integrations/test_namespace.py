"""datarax.integrations: importable without any backend installed."""

from __future__ import annotations

import importlib


def test_integrations_package_imports_no_backend_module():
    module = importlib.import_module("datarax.integrations")
    assert module.__all__ == []
    assert "hf" in module.__doc__ and "[hf]" in module.__doc__
