"""The tutorials as a reader sees them: figures rendered as images, no noise from the kernel."""

import nbformat
from nbclient import NotebookClient


def test_importing_iflow_in_jupyter_prints_nothing(tmp_path):
    """tqdm.auto would print "IProgress not found" in a kernel without ipywidgets."""
    source = "import iflow.runs, iflow.selection\nfrom iflow.runs import train"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert notebook.cells[0].outputs == []
