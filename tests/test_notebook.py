"""notebooks/forgetting_curves.ipynb runs end to end on tests/fixtures/sweep and is kept clean."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
    ("results", "shown"), [(FIXTURE, None), (DEPTH, "finetuned_minus_prompted")]
)
def test_notebook_runs_on_a_sweep(
    monkeypatch: pytest.MonkeyPatch, results: Path, shown: str | None
) -> None:
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
    if shown is not None:
        assert any(shown in str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # curves, heatmaps, grad norms, per-seed curves
    text = "".join(o.get("text", "") for o in outputs)
    n_runs = "4 complete run(s)" if results == FIXTURE else "3 complete run(s)"
    assert n_runs in text and ("left out" in text) == (results == FIXTURE)
