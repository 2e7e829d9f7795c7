"""notebooks/execute.py writes a notebook only when every cell has run: a failing cell,
Ctrl-C, a missing or broken file leave it byte for byte as it was, and say so on one line."""
import os
import signal
import subprocess
import sys

import nbformat
import pytest

from helpers import REPO, wait_for
from notebooks import execute as runner

SCRIPT = os.path.join(REPO, 'notebooks', 'execute.py')


def write_notebook(path, *sources):
    """A notebook of code cells, each with a stale output (what a full run recorded)."""
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for cell in cells:
        cell.outputs = [nbformat.v4.new_output('stream', name='stdout',
                                               text='recorded by the full run\n')]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    return path.read_bytes()


def messages(stderr):
    """execute.py's own lines (the kernel may log a warning of its own)."""
    return [line for line in stderr.splitlines() if line.startswith('execute.py')]


def start(*args):
    return subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize('content, reason', [
    (None, 'No such file or directory'),
    (b'{"cells": [', 'Notebook does not appear to be JSON'),
    (b"{}", "Notebook could not be converted from version 1"),
    (b'\xff\xfe', "'utf-8' codec can't decode"),
], ids=['missing', 'broken-json', 'not-a-notebook', 'not-text'])
def test_a_missing_or_broken_notebook_is_one_line_and_exit_2(tmp_path, capsys, content, reason):
    path = tmp_path / 'nb.ipynb'
    if content is not None:
        path.write_bytes(content)
    assert runner.main([str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f'execute.py: {path}: not a notebook that can be read ({reason}'), lines
    assert (path.read_bytes() if content is not None else None) == content
    assert os.listdir(tmp_path) == ([] if content is None else ['nb.ipynb'])


def test_wrong_usage_is_one_line_and_exit_2(capsys):
    assert runner.main([]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.slow
def test_a_failing_cell_leaves_the_notebook_byte_identical(tmp_path):
    path = tmp_path / 'nb.ipynb'
    before = write_notebook(path, 'print("one")', '1 / 0', 'print("three")')
    process = start(path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1 and 'Traceback' not in stderr, stderr
    assert messages(stderr) == [f'execute.py: {path}: cell 2 of 3 failed (ZeroDivisionError: '
                                f'division by zero); {path} was left as it was']
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['nb.ipynb']


@pytest.mark.slow
def test_ctrl_c_leaves_the_notebook_byte_identical(tmp_path):
    path, started = tmp_path / 'nb.ipynb', tmp_path / 'started'
    before = write_notebook(path, 'print("one")',
                            f'import os, time\nopen({str(started)!r}, "w").write(str(os.getpid()))'
                            '\ntime.sleep(300)')
    process = start(path)
    wait_for(lambda: started.exists() and started.read_text() or process.poll() is not None,
             240, 'the second cell to start')
    kernel = int(started.read_text())
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and 'Traceback' not in stderr, stderr
    assert messages(stderr) == [f'execute.py: {path}: interrupted in cell 2 of 2; {path} was '
                                'left as it was']
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['nb.ipynb', 'started']
    # The kernel was shut down, not left behind.
    wait_for(lambda: not os.path.exists(f'/proc/{kernel}') or _zombie(kernel), 30,
             'the kernel to end')


def _zombie(pid):
    with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0] == 'Z'


@pytest.mark.slow
def test_a_completed_run_is_written_whole(tmp_path):
    path, output = tmp_path / 'nb.ipynb', tmp_path / 'out.ipynb'
    before = write_notebook(path, 'print("one")', 'print(1 + 1)')
    # As tests/test_notebooks.py and benchmarks/ways_to_train.py call it: into another file.
    with runner.interpreter_kernel() as kernel_name:
        nb = runner.execute(str(path), str(output), kernel_name=kernel_name)
    assert [cell.outputs[0].text for cell in nb.cells] == ['one\n', '2\n']
    assert path.read_bytes() == before and nbformat.read(str(output), as_version=4) == nb
    # From the command line, in place.
    process = start(path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and messages(stderr) == [], stderr
    nb = nbformat.read(str(path), as_version=4)
    assert [cell.outputs[0].text for cell in nb.cells] == ['one\n', '2\n']
    assert sorted(os.listdir(tmp_path)) == ['nb.ipynb', 'out.ipynb']  # no temporary file left
