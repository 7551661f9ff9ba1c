"""notebooks/forgetting_curves.ipynb runs end to end on tests/fixtures/sweep, on real runs with
the prompted baseline and on a hand-built sweep with pairs domains, and is kept clean."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.pairs_runs import write_pairs_sweep

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "forgetting_curves.ipynb"
FIXTURE = ROOT / "tests" / "fixtures" / "sweep"
DEPTH = ROOT / "results" / "lora_eval_depth" / "runs"  # real runs with the prompted baseline


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "CONTINUAL_RESULTS" in code[0].source


@pytest.mark.parametrize(
    ("which", "shown", "n_runs"),
    [("fixture", None, 4), ("depth", "finetuned_minus_prompted", 3), ("pairs", "acc_bwt", 4)],
)
def test_notebook_runs_on_a_sweep(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, which: str, shown: str | None, n_runs: int
) -> None:
    results = {"fixture": FIXTURE, "depth": DEPTH}.get(which) or write_pairs_sweep(tmp_path / "p")
    monkeypatch.setenv("CONTINUAL_RESULTS", str(results))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown_text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    if shown is not None:
        assert shown in shown_text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # loss curves, heatmaps, per-seed curves, and the grad norms (runs with train logs) or the
    # accuracy curves (the pairs sweep: accuracy rows, no train_log.csv)
    assert len(images) == 4
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{n_runs} complete run(s)" in text and ("left out" in text) == (which == "fixture")
    has_accuracy = which == "pairs"
    assert ("no accuracy rows" in text) == (not has_accuracy)
    if has_accuracy:  # lora's BWT: 100 mean(60 - 80) and 100 mean(50 - 90) -> -30 over seeds
        assert "-30.0" in shown_text and "finetuned_minus_prompted_pts" in shown_text
