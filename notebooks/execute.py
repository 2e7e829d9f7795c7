"""Run a notebook top to bottom with nbclient and save it with its outputs.

    python notebooks/execute.py notebooks/vgg.ipynb [OUTPUT.ipynb]

Without OUTPUT the notebook is rewritten in place.  Only a completed run is
written, all at once (a temporary file renamed over the target): when a cell
fails, the kernel dies or Ctrl-C stops the run, nothing is written, one line
says in which cell it stopped, and the exit code is 1 (130 for Ctrl-C); the
recorded outputs of a full run are never mixed with a partial one.  A missing
or unreadable notebook is one line and exit code 2.  Set VGG_QUICK=1 for the
quick mode the tests use.  The kernel is this very interpreter (the one that
runs this script), whatever Jupyter kernels are installed.

It runs the .ipynb, whose cells come from its paired MyST source
notebooks/NAME.md (the file to edit): after editing the .md, run
`jupytext --sync notebooks/NAME.ipynb` first, or the old cells are executed.
"""
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Iterator, List, Optional

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from vgg.base import write_text


class Stopped(Exception):
    """A run that did not complete; nothing was written.

    Attributes
    ----------
    cell : int
        The cell it stopped in (1 is the first), 0 before any cell ran.
    cells : int
        The notebook's cells.
    reason : str
        Why: the error's name and message, or that it was interrupted.
    """

    def __init__(self, cell: int, cells: int, reason: str):
        self.cell, self.cells, self.reason = cell, cells, reason
        super().__init__(f'stopped in cell {cell} of {cells} ({reason})')


class _Stop(Exception):
    """Raised into nbclient to run no further cell (a KeyboardInterrupt would upset asyncio)."""


class Interrupted(Stopped, KeyboardInterrupt):
    """Ctrl-C (a KeyboardInterrupt) stopped the run; nothing was written."""

    def __init__(self, cell: int, cells: int):
        super().__init__(cell, cells, 'interrupted')


@contextlib.contextmanager
def _sigint_handler(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` receives SIGINT (Ctrl-C) while open; only the main thread can set one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def execute(path: str, output: str, timeout: int = -1,
            kernel_name: str = 'python3') -> nbformat.NotebookNode:
    """Execute ``path`` in its own folder; once every cell has run, write the result to
    ``output`` (atomically); return it.

    Raises
    ------
    Stopped
        If a cell fails, times out or the kernel dies (the cell's error is chained).
    Interrupted
        On Ctrl-C (a KeyboardInterrupt and a Stopped).
    ValueError
        If ``path`` cannot be read or is not a notebook (one line).
    OSError
        If ``output`` cannot be written (one line; a file it would replace is unchanged).
    """
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError, AttributeError, KeyError, TypeError,
            nbformat.ValidationError) as err:  # broken JSON, JSON that is no notebook
        reason = getattr(err, 'strerror', None) or ' '.join(str(err).split())[:200]
        raise ValueError(f'{path}: not a notebook that can be read ({reason})') from None
    running = [0]  # the 1-based number of the cell being run
    ctrl_c: List[int] = []  # one entry per Ctrl-C

    def cell_started(cell: nbformat.NotebookNode, cell_index: int) -> None:
        if ctrl_c:  # it came before this cell: run no more
            raise _Stop()
        running[0] = cell_index + 1

    def interrupt(signum: int, frame: Any) -> None:
        # The first Ctrl-C stops the running cell, as Jupyter's interrupt button does (the
        # kernel runs in a session of its own, which a terminal's Ctrl-C does not reach);
        # a second one ends the kernel.
        ctrl_c.append(signum)
        pgid = getattr(getattr(client.km, 'provisioner', None), 'pgid', None)
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGINT if len(ctrl_c) == 1 else signal.SIGKILL)
    # coalesce_streams keeps only what a progress bar's carriage returns leave on screen.
    folder = os.path.dirname(os.path.abspath(path))
    client = NotebookClient(nb, timeout=None if timeout < 0 else timeout, kernel_name=kernel_name,
                            coalesce_streams=True, on_cell_start=cell_started,
                            resources={'metadata': {'path': folder}})
    ended: List[BaseException] = []

    def run() -> None:
        try:
            client.execute()
        except BaseException as err:  # handed to the main thread
            ended.append(err)
    # nbclient runs in a thread of its own: in the main thread it would take SIGINT over,
    # kill the kernel and fail in its own clean-up, with tracebacks and no word of the cell.
    worker = threading.Thread(target=run, name='nbclient')
    with _sigint_handler(interrupt):
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    if ctrl_c:  # whether the cell stopped, the kernel died or the last cell had ended
        raise Interrupted(running[0], len(nb.cells)) from None
    if ended and isinstance(ended[0], CellExecutionError):
        raise Stopped(running[0], len(nb.cells), f'{ended[0].ename}: {ended[0].evalue}') \
            from ended[0]
    if ended and isinstance(ended[0], (CellTimeoutError, DeadKernelError)):
        raise Stopped(running[0], len(nb.cells), ' '.join(str(ended[0]).split())) from ended[0]
    if ended:
        raise ended[0]
    text = nbformat.writes(nb)
    write_text(output, text if text.endswith('\n') else text + '\n')  # as nbformat.write
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


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit code (0 done, 1 a cell failed, 2 a bad notebook
    file or usage, 130 Ctrl-C)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print('usage: python notebooks/execute.py NOTEBOOK.ipynb [OUTPUT.ipynb] (see the '
              "file's docstring)", file=sys.stderr)
        return 2
    path, output = args[0], args[-1]
    left = f'{output} was left as it was' if output == path else f'{output} was not written'
    try:
        with interpreter_kernel() as kernel_name:
            execute(path, output, kernel_name=kernel_name)
    except Interrupted as stop:
        where = f'in cell {stop.cell} of {stop.cells}' if stop.cell else 'before its first cell'
        print(f'execute.py: {path}: interrupted {where}; {left}', file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the run started or after it ended
        print(f'execute.py: {path}: interrupted; {left}', file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f'execute.py: {path}: cell {stop.cell} of {stop.cells} failed '
              f'({" ".join(stop.reason.split())}); {left}', file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f'execute.py: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
