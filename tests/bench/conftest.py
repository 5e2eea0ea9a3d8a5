"""Fixtures of the benchmark tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datarax.bench import ADAPTERS, Adapter, Scenario


@pytest.fixture
def set_up(tmp_path: Path) -> Iterator[Callable[..., Adapter]]:
    """Sets an adapter up on a scenario's ``tiny`` variant (skips a missing one)."""
    opened: list[Adapter] = []

    def make(name: str, scenario: Scenario, **options: object) -> Adapter:
        cls = ADAPTERS[name]
        if (why := cls.missing()) is not None:
            pytest.skip(why)
        adapter = cls(**options)
        if (why := adapter.unsupported(scenario)) is not None:
            pytest.skip(f"{name} cannot express {scenario.id}: {why}")
        workdir = tmp_path / f"work-{len(opened)}"
        workdir.mkdir()
        if scenario.on_disk:
            scenario.write_npy(workdir, "tiny")
        adapter.setup(scenario, "tiny", scenario.data("tiny"), workdir)
        opened.append(adapter)
        return adapter

    yield make
    for adapter in opened:
        adapter.close()
