"""Every notebook runs top to bottom (quick mode); the committed notebooks hold real full runs and
read right when rendered to HTML; each notebook's cells match its paired MyST source
notebooks/NAME.md."""
import glob
import html
import os
import pathlib
import re
import shutil

import jupytext
import nbformat
import pytest
from nbconvert import HTMLExporter

from helpers import REPO
from notebooks import execute as runner
from vgg import Run, RunConfig

NOTEBOOKS = os.path.join(REPO, 'notebooks')

CHAPTER_RUN = os.path.join(NOTEBOOKS, 'results', 'chapter')
# Lines of MXNet's C++ log ("[21:03:57] ../src/...: GPU support is disabled ...") and of Jupyter.
FRAMEWORK_LOG = re.compile(r'\[\d\d:\d\d:\d\d\] \.\./src/|GPU support is disabled|\[IPKernelApp\]')
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
    assert text == notebook, (f'notebooks/{name} is out of sync with '
                              f'notebooks/{os.path.basename(md)} '
                              f'(cells differ from cell {first}; .md {len(text)} cells, .ipynb '
                              f'{len(notebook)}): run `jupytext --sync notebooks/{name}`')


@pytest.fixture(scope='module')
def kernel_name():
    """A kernel of this very interpreter, whatever other kernels are installed."""
    with runner.interpreter_kernel() as name:
        yield name


def stream_text(nb):
    return '\n'.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                     for out in cell.get('outputs', []) if out.get('output_type') == 'stream')


def check_rendered(nb, figures: int) -> str:
    """Render ``nb`` to HTML as nbconvert does for a reader; returns the page's text.

    A reader of a static page (GitHub, nbconvert) sees what a progress bar left, not
    a widget or a bar at 0%; no framework log line; every figure; the epoch lines."""
    page, _ = HTMLExporter().from_notebook_node(nb)
    text = html.unescape(re.sub(r'<[^>]+>', '', page))
    assert not [out for cell in nb.cells for out in cell.get('outputs', [])
                if 'application/vnd.jupyter.widget-view+json' in out.get('data', {})]
    assert not re.search(r'(^|\s)0%\|', text), 'a progress bar at 0%'
    assert not FRAMEWORK_LOG.search(text), FRAMEWORK_LOG.search(text).group(0)
    assert page.count('src="data:image/png;base64,') == figures
    assert EPOCH_LINE.search(text)
    return text


def run_quick(name, kernel_name, data_dir, monkeypatch, tmp_path):
    """Run notebooks/NAME in preview mode in a copy of notebooks/ (with the reference run), so
    that the reader's run directories (../runs/) land in ``tmp_path``; returns the notebook."""
    monkeypatch.setenv('VGG_QUICK', '1')
    monkeypatch.setenv('VGG_DATA_DIR', data_dir)
    copy = tmp_path / 'notebooks'
    if not copy.exists():
        shutil.copytree(NOTEBOOKS, copy,
                        ignore=shutil.ignore_patterns('checkpoints', '.lock', '__pycache__'))
    return runner.execute(str(copy / name), str(tmp_path / name), timeout=600,
                          kernel_name=kernel_name)


def record(run_dir):
    """The bytes of a run directory's record files (None where missing)."""
    paths = {name: pathlib.Path(run_dir, name) for name in ('config.json', 'metrics.jsonl')}
    return {name: path.read_bytes() if path.exists() else None for name, path in paths.items()}


def comparison(text):
    """The rows of the chapter notebook's table of the reader's run beside the reference run:
    {epoch: (your loss, train acc, test acc, sec), (reference's ...)}, '-' where a run has none."""
    rows = re.findall(r'^\s+(\d)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$',
                      text, re.M)
    return {int(row[0]): (row[1:5], row[5:]) for row in rows}


def reference_cells(run_dir):
    return {h['epoch']: ('%.4f' % h['loss'], '%.3f' % h['train_acc'], '%.3f' % h['test_acc'],
                         '%.1f' % h['time']) for h in Run(run_dir).history()}


@pytest.mark.slow
def test_chapter_notebook_runs(kernel_name, real_data_dir, monkeypatch, tmp_path):
    before = os.path.getmtime(os.path.join(NOTEBOOKS, 'vgg.ipynb'))
    reference = tmp_path / 'notebooks' / 'results' / 'chapter'
    nb = run_quick('vgg.ipynb', kernel_name, real_data_dir, monkeypatch, tmp_path)
    # the live learning curves, the reader's run beside the reference run, the predictions
    text = check_rendered(nb, figures=3)
    assert 'output shape:\t (1, 64, 112, 112)' in text and 'output shape:\t (1, 1000)' in text
    assert 'training on' in text and re.search(r'epoch 1: 100%\|', text)
    assert os.path.getmtime(os.path.join(NOTEBOOKS, 'vgg.ipynb')) == before
    # The reader's run went to its own folder; the reference run was read, never written.
    assert Run(str(tmp_path / 'runs' / 'chapter-preview')).config().resize == 32
    assert record(reference) == record(CHAPTER_RUN)
    assert re.search(r'^your run +\.\./runs/chapter-preview \| resize 32 \| 384 training', text,
                     re.M)
    assert re.search(r'^reference run results/chapter \| resize 224 \| 60000 training', text, re.M)
    rows = comparison(text)
    assert [ref for _, ref in rows.values()] == list(reference_cells(CHAPTER_RUN).values())
    assert rows[1][0][2] == EPOCH_LINE.search(text).group(2) and rows[2][0] == ('-',) * 4


@pytest.mark.slow
def test_exercises_notebook_runs(kernel_name, real_data_dir, monkeypatch, tmp_path):
    nb = run_quick('vgg-exercises.ipynb', kernel_name, real_data_dir, monkeypatch, tmp_path)
    # Both sizes are trained in preview (no chapter run is of these settings), then the comparison.
    text = check_rendered(nb, figures=3)
    assert 'Total' in text and 'VGG-11 / AlexNet: params' in text  # exercise 1's tables
    assert re.search(r'VGG-16 \(D\)\s+138,357,544\s+138', text)  # exercise 3 against the paper
    assert len(re.findall(r'trained in this notebook$', text, re.M)) == 2
    # two resizes, then four VGG-16 and two VGG-19 variants of two epochs
    assert len(EPOCH_LINE.findall(stream_text(nb))) == 2 + 6 * 2
    for net in ('VGG-16', 'VGG-19'):
        assert re.search(net + r' batch norm\s+[\d.]+ [\d.]+\s+[\d.]+ [\d.]+\s+[\d.]+$', text,
                         re.M)


def committed(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == 'code']
    assert all(cell.execution_count for cell in code), f'{name}: a cell was not run'
    assert not [out for cell in code for out in cell.outputs if out.output_type == 'error']
    return nb


def test_committed_chapter_notebook_holds_one_full_run():
    nb = committed('vgg.ipynb')
    text = check_rendered(nb, figures=3)
    epochs = EPOCH_LINE.findall(text)
    assert [epoch for epoch, _ in epochs] == ['1', '2', '3'], text[-2000:]
    assert float(epochs[-1][1]) > 0.1  # better than chance over 10 classes
    # A reader's run of the chapter's settings, shown beside the reference run's record.
    assert re.search(r'^your run +\.\./runs/chapter \| resize 224 \| 60000 training', text, re.M)
    assert re.search(r'^reference run results/chapter \| resize 224 \| 60000 training', text, re.M)
    rows = comparison(text)
    assert [yours[2] for yours, _ in rows.values()] == [acc for _, acc in epochs]
    assert [ref for _, ref in rows.values()] == list(reference_cells(CHAPTER_RUN).values())
    run = Run(CHAPTER_RUN)
    assert run.config() == RunConfig(arch='vgg11', ratio=4, resize=224, epochs=3,
                                     batch_size=128, lr=0.05, init='xavier', seed=0)
    assert all(len(h['points']) >= 10 for h in run.history())


def test_committed_exercises_notebook_holds_its_full_run():
    nb = committed('vgg-exercises.ipynb')
    text = check_rendered(nb, figures=2)  # the 96 run's curves, then exercise 3's comparison
    assert re.search(r'^\s+96\s+3 x 3\s+\d\.\d{3}.*trained in this notebook$', text, re.M)
    # The 224 side is read from the chapter notebook's run: the reader's, else the reference.
    assert re.search(r'^\s+224\s+7 x 7\s+\d\.\d{3}.* run of vgg\.ipynb '
                     r'\((\.\./runs/chapter|results/chapter)\)$', text, re.M)
    # 96 for three epochs, then four VGG-16 and two VGG-19 variants of three epochs
    assert len(EPOCH_LINE.findall(stream_text(nb))) == 3 + 6 * 3
