"""The datarax-bench command line skeleton."""

from __future__ import annotations

import shutil
import subprocess
import sys

from datarax.bench._cli import main


def test_list_runs(capsys):
    assert main(["list"]) == 0
    assert "scenarios" in capsys.readouterr().out


def test_console_script_is_installed():
    script = shutil.which(
        "datarax-bench", path=str(__import__("pathlib").Path(sys.executable).parent)
    )
    assert script is not None
    out = subprocess.run([script, "list"], capture_output=True, text=True, check=True)
    assert "adapters" in out.stdout
