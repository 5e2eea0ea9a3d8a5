"""Hatchling metadata hook shared by the four datarax distributions.

One version for all four lives in the repository's ``VERSION`` file. Each
distribution's ``pyproject.toml`` declares ``version`` and ``dependencies`` dynamic
and lists its third-party requirements and its datarax siblings in the hook's
table; this hook fills in the version and pins every sibling to exactly it, so a
release can never mix versions of the namespace.
"""

from __future__ import annotations

from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface

VERSION_FILE = Path(__file__).resolve().parent.parent / "VERSION"


class DataraxMetadataHook(MetadataHookInterface):
    """Sets the shared version and exact sibling pins."""

    PLUGIN_NAME = "custom"

    def update(self, metadata: dict) -> None:
        """Fills ``version`` and ``dependencies`` from ``VERSION`` and the table."""
        version = VERSION_FILE.read_text().strip()
        metadata["version"] = version
        siblings = [f"{name}=={version}" for name in self.config.get("siblings", [])]
        metadata["dependencies"] = siblings + list(self.config.get("requires", []))
