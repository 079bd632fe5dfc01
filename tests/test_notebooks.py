"""The tutorials as a reader sees them: figures rendered as images, no noise from the kernel."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_importing_iflow_in_jupyter_prints_nothing(tmp_path):
    """tqdm.auto would print "IProgress not found" in a kernel without ipywidgets."""
    source = "import iflow.runs, iflow.selection\nfrom iflow.runs import train"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert notebook.cells[0].outputs == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_saved_with_rendered_figures(path):
    """Saved outputs (what the docs show) hold PNG figures, no bare Figure reprs, memory addresses or warnings."""
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    outputs = [output for cell in notebook["cells"] if cell["cell_type"] == "code" for output in cell["outputs"]]
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure was saved"
    for output in outputs:
        text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
        assert "<Figure size" not in text or "image/png" in output.get("data", {}), "a figure shown as text"
        assert " at 0x" not in text, "an output that depends on a memory address"
        assert output.get("name") != "stderr", f"stderr in a saved notebook: {text[:200]}"
    assert all(cell.get("execution_count") for cell in notebook["cells"] if cell["cell_type"] == "code")
