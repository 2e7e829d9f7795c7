"""Run a notebook top to bottom with nbclient and save it with its outputs.

    python notebooks/execute.py notebooks/vgg.ipynb [OUTPUT.ipynb]

Without OUTPUT the notebook is rewritten in place.  Set VGG_QUICK=1 for the
quick mode the tests use.

It runs the .ipynb, whose cells come from its paired MyST source
notebooks/NAME.md (the file to edit): after editing the .md, run
`jupytext --sync notebooks/NAME.ipynb` first, or the old cells are executed.
"""
import os
import sys

import nbformat
from nbclient import NotebookClient


def execute(path: str, output: str, timeout: int = -1,
            kernel_name: str = 'python3') -> nbformat.NotebookNode:
    """Execute ``path`` in its own folder; write the result to ``output``; return it."""
    nb = nbformat.read(path, as_version=4)
    # coalesce_streams keeps only what a progress bar's carriage returns leave on screen.
    client = NotebookClient(nb, timeout=None if timeout < 0 else timeout, kernel_name=kernel_name,
                            coalesce_streams=True,
                            resources={'metadata': {'path': os.path.dirname(os.path.abspath(path))}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, output)
    return nb


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    execute(sys.argv[1], sys.argv[-1])
