"""The datarax-bench command line, end to end in real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from datarax.bench import ADAPTERS, SCENARIOS
from datarax.bench._cli import main

# One worker runs the whole module (scripts/test.sh: --dist loadgroup), so the
# module-scoped tiny_run (a real benchmark run, ~30 s) runs once, not per worker.
pytestmark = pytest.mark.xdist_group("bench-cli")


def script() -> str:
    found = shutil.which("datarax-bench", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


def test_list_names_scenarios_and_adapters_installed_or_not(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scenarios:")
    for sid, scenario in SCENARIOS.items():
        assert f"{sid:<7} {scenario.title}" in out
    for name, cls in ADAPTERS.items():
        state = "installed" if cls.missing() is None else f"missing: {cls.missing()}"
        assert f"{name:<20} {cls.kind:<8} {state}" in out


def test_console_script_is_installed():
    out = subprocess.run([script(), "list"], capture_output=True, text=True, check=True)
    assert "adapters:" in out.stdout


@pytest.fixture(scope="module")
def tiny_run(run_once) -> Path:
    """A real ``datarax-bench run`` (~15 s), made once per test run."""

    def run(out: Path) -> None:
        done = subprocess.run(
            [script(), "run", "--scenarios", "NLP-1",
             "--adapters", "Floor,Datarax-scan",
             "--variant", "tiny", "--repeats", "2", "--out", str(out)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "2 measured, 0 skipped, 0 errors" in done.stdout
        assert "NLP-1  Datarax-scan" in done.stderr  # a measurement's progress line

    return run_once("bench-tiny-run", run)


def test_run_writes_results_report_and_charts(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["command"].startswith("datarax-bench run --scenarios NLP-1")
    assert [(r["adapter"], r["status"]) for r in results["rows"]] == [
        ("Floor", "ok"),
        ("Datarax-scan", "ok"),
    ]
    assert results["isolated"] is True
    report = (tiny_run / "report.md").read_text()
    assert "## NLP-1: " in report and "| Datarax-scan |" in report
    assert "(charts/NLP-1.png)" in report
    assert matplotlib.image.imread(tiny_run / "charts" / "NLP-1.png").ndim == 3


def test_report_renders_again_from_results(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tiny_run / "results.json", copy)
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (tiny_run / "report.md").read_text()
    assert (copy / "charts" / "NLP-1.png").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_exits_nonzero_only_when_a_ratio_grew(tiny_run, tmp_path, capsys):
    results = json.loads((tiny_run / "results.json").read_text())
    assert main(["compare", str(tiny_run), str(tiny_run)]) == 0
    assert "no ratio to Floor grew by more than 1.2x" in capsys.readouterr().out
    scan = next(r for r in results["rows"] if r["adapter"] == "Datarax-scan")
    scan["x_floor"] *= 1.5
    slower = tmp_path / "slower"
    slower.mkdir()
    (slower / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(tiny_run), str(slower)]) == 1
    out = capsys.readouterr().out
    assert "NLP-1  Datarax-scan" in out and "(1.50x)  REGRESSION" in out
    assert "1 ratio(s) to Floor grew by more than 1.2x: NLP-1 Datarax-scan" in out
    assert main(["compare", str(tiny_run), str(slower), "--max-growth", "1.6"]) == 0


def test_compare_of_runs_sharing_nothing_is_a_usage_error(tiny_run, tmp_path, capsys):
    results = json.loads((tiny_run / "results.json").read_text())
    results["rows"] = []
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(tiny_run), str(empty)]) == 2
    assert "no adapter x scenario was measured in both runs" in capsys.readouterr().err


def test_run_refuses_unknown_names(capsys, tmp_path):
    assert main(["run", "--adapters", "Nope", "--out", str(tmp_path)]) == 2
    assert "unknown adapters ['Nope']" in capsys.readouterr().err


def test_import_loads_no_peer_and_no_matplotlib():
    code = (
        "import sys, datarax.bench\n"
        "heavy = ('grain', 'tensorflow', 'torch', 'spdl', 'datasets', 'matplotlib',"
        " 'tqdm',"
        " 'psutil')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_compare_counts_a_loader_that_now_fails_and_refuses_mixed_variants(
    tiny_run, tmp_path, capsys
):
    results = json.loads((tiny_run / "results.json").read_text())
    crashed = json.loads(json.dumps(results))
    row = next(r for r in crashed["rows"] if r["adapter"] == "Datarax-scan")
    row["status"] = "error"
    folder = tmp_path / "crashed"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(crashed))
    assert main(["compare", str(tiny_run), str(folder)]) == 1
    assert "measured before, not after: NLP-1 Datarax-scan (error)" in (
        capsys.readouterr().out
    )
    results["variant"] = "small"
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(tiny_run), str(other)]) == 2
    assert "different variants" in capsys.readouterr().err
    assert main(["compare", str(tiny_run), str(tiny_run), "--max-growth", "0"]) == 2
