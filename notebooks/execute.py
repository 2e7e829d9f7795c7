"""Run a notebook top to bottom with nbclient and save it with its outputs.

    python notebooks/execute.py notebooks/vgg.ipynb [OUTPUT.ipynb]

Without OUTPUT the notebook is rewritten in place.  Set VGG_QUICK=1 for the
quick mode the tests use.  The kernel is this very interpreter (the one that
runs this script), whatever Jupyter kernels are installed.

It runs the .ipynb, whose cells come from its paired MyST source
notebooks/NAME.md (the file to edit): after editing the .md, run
`jupytext --sync notebooks/NAME.ipynb` first, or the old cells are executed.
"""
import contextlib
import json
import os
import sys
import tempfile
from typing import Iterator

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


@contextlib.contextmanager
def interpreter_kernel() -> Iterator[str]:
    """While open, a Jupyter kernel named by the yielded name runs this very interpreter."""
    name = 'vgg-this-python'
    with tempfile.TemporaryDirectory(prefix='vgg-kernel-') as root:
        os.makedirs(os.path.join(root, 'kernels', name))
        with open(os.path.join(root, 'kernels', name, 'kernel.json'), 'w') as f:
            json.dump({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
                                '{connection_file}'],
                       'display_name': 'Python (%s)' % sys.executable, 'language': 'python'}, f)
        old = os.environ.get('JUPYTER_PATH')
        os.environ['JUPYTER_PATH'] = root
        try:
            yield name
        finally:
            if old is None:
                del os.environ['JUPYTER_PATH']
            else:
                os.environ['JUPYTER_PATH'] = old


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with interpreter_kernel() as kernel_name:
        execute(sys.argv[1], sys.argv[-1], kernel_name=kernel_name)
