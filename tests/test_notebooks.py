"""Every notebook runs top to bottom (quick mode); the committed chapter notebook holds a real run;
each notebook's cells match its paired MyST source notebooks/NAME.md."""
import glob
import json
import os
import re
import sys

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from helpers import REPO

NOTEBOOKS = os.path.join(REPO, 'notebooks')
CHAPTER_RUN = os.path.join(NOTEBOOKS, 'results', 'chapter-run.json')
EPOCH_LINE = re.compile(r'epoch (\d+), loss \d+\.\d{4}, train acc \d\.\d{3}, test acc (\d\.\d{3}), '
                        r'time \d+\.\d sec')
IPYNBS = sorted(glob.glob(os.path.join(NOTEBOOKS, '*.ipynb')))


def cells(path):
    return [(cell.cell_type, cell.source) for cell in jupytext.read(path).cells]


@pytest.mark.parametrize('ipynb', IPYNBS, ids=os.path.basename)
def test_notebook_pair_in_sync(ipynb):
    """notebooks/NAME.md is the source people edit; NAME.ipynb must hold the same cells."""
    name = os.path.basename(ipynb)
    md = ipynb[:-len('.ipynb')] + '.md'
    assert os.path.exists(md), (f'{name} has no paired notebooks/{os.path.basename(md)}: '
                                f'run `jupytext --set-formats ipynb,md:myst notebooks/{name}`')
    text, notebook = cells(md), cells(ipynb)
    first = next((i for i, pair in enumerate(zip(text, notebook)) if pair[0] != pair[1]),
                 min(len(text), len(notebook)))
    assert text == notebook, (f'notebooks/{name} is out of sync with notebooks/{os.path.basename(md)} '
                              f'(cells differ from cell {first}; .md {len(text)} cells, .ipynb '
                              f'{len(notebook)}): run `jupytext --sync notebooks/{name}`')


@pytest.fixture(scope='module')
def kernel_name(tmp_path_factory):
    """A kernelspec that runs this very interpreter, whatever other kernels are installed."""
    root = tmp_path_factory.mktemp('jupyter')
    spec_dir = root / 'kernels' / 'vgg-test'
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'vgg tests', 'language': 'python'}))
    old = os.environ.get('JUPYTER_PATH')
    os.environ['JUPYTER_PATH'] = str(root)
    yield 'vgg-test'
    if old is None:
        del os.environ['JUPYTER_PATH']
    else:
        os.environ['JUPYTER_PATH'] = old


def stream_text(nb):
    return '\n'.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                     for out in cell.get('outputs', []) if out.get('output_type') == 'stream')


def run_quick(name, kernel_name, data_dir, monkeypatch):
    monkeypatch.setenv('VGG_QUICK', '1')
    monkeypatch.setenv('VGG_DATA_DIR', data_dir)
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name=kernel_name,
                   resources={'metadata': {'path': NOTEBOOKS}}).execute()
    return nb


def read_or_none(path):
    if os.path.exists(path):
        with open(path, 'rb') as f:
            return f.read()
    return None


@pytest.mark.slow
def test_chapter_notebook_runs(kernel_name, real_data_dir, monkeypatch):
    before = os.path.getmtime(os.path.join(NOTEBOOKS, 'vgg.ipynb'))
    saved_run = read_or_none(CHAPTER_RUN)
    nb = run_quick('vgg.ipynb', kernel_name, real_data_dir, monkeypatch)
    text = stream_text(nb)
    assert 'output shape:\t (1, 64, 112, 112)' in text and 'output shape:\t (1, 1000)' in text
    assert 'training on' in text and EPOCH_LINE.search(text)
    assert re.search(r'epoch 1: [\d.]+ sec, [\d.]+ training images/sec', text)
    images = [out for cell in nb.cells if cell.cell_type == 'code' for out in cell.outputs
              if 'image/png' in out.get('data', {})]
    assert len(images) == 2  # learning curves and the prediction grid
    assert os.path.getmtime(os.path.join(NOTEBOOKS, 'vgg.ipynb')) == before
    assert read_or_none(CHAPTER_RUN) == saved_run  # quick mode never replaces the real run's record


@pytest.mark.slow
def test_exercises_notebook_runs(kernel_name, real_data_dir, monkeypatch):
    nb = run_quick('vgg-exercises.ipynb', kernel_name, real_data_dir, monkeypatch)
    text = stream_text(nb)
    assert 'Total' in text and 'VGG-11 / AlexNet: params' in text  # exercise 1's tables
    assert re.search(r'VGG-16 \(D\)\s+138,357,544\s+138', text)  # exercise 3 against the paper
    # two resizes, then VGG-16 (VGG-11's side of exercise 3 is the first resize's first epoch)
    assert len(EPOCH_LINE.findall(text)) == 3
    assert re.search(r'VGG-11  test acc [\d.]+, [\d.]+ sec.*\nVGG-16  test acc', text)


def committed(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == 'code']
    assert all(cell.execution_count for cell in code), f'{name}: a cell was not run'
    assert not [out for cell in code for out in cell.outputs if out.output_type == 'error']
    return stream_text(nb)


def test_committed_chapter_notebook_holds_one_full_run():
    text = committed('vgg.ipynb')
    epochs = EPOCH_LINE.findall(text)
    assert [epoch for epoch, _ in epochs] == ['1', '2', '3'], text[-2000:]
    assert float(epochs[-1][1]) > 0.1  # better than chance over 10 classes
    assert 'resize: 224 | training images: 60000' in text and re.search(r'device: \w+\(\d\)', text)
    # The saved record (which exercise 2 reads) is that same run.
    with open(CHAPTER_RUN) as f:
        run = json.load(f)
    assert (run['resize'], run['batch_size'], run['lr'], run['ratio']) == (224, 128, 0.05, 4)
    assert ['%.3f' % h['test_acc'] for h in run['history']] == [acc for _, acc in epochs]


def test_committed_exercises_notebook_holds_its_full_run():
    text = committed('vgg-exercises.ipynb')
    assert re.search(r'^\s+96\s+\d\.\d{3}.*this notebook$', text, re.M)
    assert re.search(r'^\s+224\s+\d\.\d{3}.*vgg\.ipynb', text, re.M)
    assert len(EPOCH_LINE.findall(text)) == 4  # 96 for three epochs, then VGG-16 for one
