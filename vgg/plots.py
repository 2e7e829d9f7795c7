"""Figures for the chapter: learning curves, predictions on test images, confusion matrices."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from mxnet import gluon, nd

from .base import atomic_write, in_jupyter
from .data import TEXT_LABELS, get_fashion_mnist_labels


def save_figure(fig, path: str) -> None:
    """Atomically save a matplotlib figure as PNG, then close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    finally:
        plt.close(fig)


def plot_history(history: Sequence[dict], title: Optional[str] = None,
                 points: Sequence[dict] = ()):
    """Learning curves: loss and train/test accuracy; returns the matplotlib Figure.

    Epochs that carry a finer history (``points``, see :func:`vgg.train`) are
    drawn from it, many points per epoch; the epoch means are drawn as markers
    on top, and the test accuracy once per epoch.  ``points`` are those of an
    epoch still running, drawn after the finished ones.
    """
    if not history and not points:
        raise ValueError('plot_history needs at least one epoch or point of history')
    epochs = [h['epoch'] for h in history]
    points = [p for h in history for p in h.get('points') or ()] + list(points)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    if points:
        x = [p['epoch'] for p in points]
        ax_loss.plot(x, [p['loss'] for p in points], '-', lw=1, color='C0', label='train loss')
        ax_acc.plot(x, [p['train_acc'] for p in points], '-', lw=1, color='C0',
                    label='train acc')
        mean_style = {'ls': 'none', 'marker': 'o', 'color': 'C0', 'mfc': 'white'}
        labels = ('epoch mean', 'epoch mean')
    else:
        mean_style = {'ls': '-', 'marker': 'o', 'color': 'C0'}
        labels = ('train loss', 'train acc')
    if history:
        ax_loss.plot(epochs, [h['loss'] for h in history], label=labels[0], **mean_style)
        ax_acc.plot(epochs, [h['train_acc'] for h in history], label=labels[1], **mean_style)
        ax_acc.plot(epochs, [h['test_acc'] for h in history], 's--', color='C1',
                    label='test acc')
    ax_loss.set_ylabel('loss')
    ax_acc.set_ylabel('accuracy')
    first = int(min(epochs[:1] + [p['epoch'] for p in points]))
    last = max(epochs[-1:] + [math.ceil(p['epoch']) for p in points])
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel('epoch')
        ax.set_xticks(range(first, last + 1))
        ax.ticklabel_format(axis='y', useOffset=False)  # a flat loss reads 2.302, not 1e-5+2.302
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_histories(histories: Mapping[str, Sequence[dict]], title: Optional[str] = None):
    """Several runs in one figure: training loss (the finer history where an epoch has one)
    and test accuracy by epoch, one colour per run; returns the matplotlib Figure.

    ``histories`` maps a label to a run's history (:func:`vgg.train`, :meth:`vgg.Run.history`).
    """
    if not histories or not all(histories.values()):
        raise ValueError('plot_histories needs at least one run, each with at least one epoch')
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.8))
    for label, history in histories.items():
        points = [p for h in history for p in h.get('points') or ()] or history
        line, = ax_loss.plot([p['epoch'] for p in points], [p['loss'] for p in points], '-',
                             lw=1, label=label)
        ax_acc.plot([h['epoch'] for h in history], [h['test_acc'] for h in history], 'o-',
                    color=line.get_color())
    last = max(h[-1]['epoch'] for h in histories.values())
    ax_loss.set(xlabel='epoch', ylabel='training loss')
    ax_acc.set(xlabel='epoch', ylabel='test accuracy', xticks=range(1, last + 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    rows = math.ceil(len(histories) / 3)
    fig.legend(loc='lower center', ncol=3, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    return fig


class LiveCurves:
    """Learning curves that grow while a run trains.

    Give :meth:`add_point` as ``on_point`` and :meth:`add_epoch` as
    ``on_epoch_end`` to :func:`vgg.train` or :func:`vgg.fit`.  In Jupyter one
    figure is redrawn in place (a saved notebook keeps its last state);
    elsewhere each point is printed as a line of text.

    Parameters
    ----------
    title : str, optional
        The figure's title.
    history : list of dict
        Epochs already done (a resumed run's), drawn first.
    """

    def __init__(self, title: Optional[str] = None, history: Sequence[dict] = ()):
        self.title, self.history, self.points = title, list(history), []
        self._display = None
        if in_jupyter():
            # The figure's output comes first, before the progress bar prints: a bar split by
            # an output shown after it would leave a stale copy above it in JupyterLab.
            from IPython.display import display
            if self.history:
                self._draw()
            else:
                self._display = display({'text/plain': ''}, raw=True, display_id=True)

    def add_point(self, point: dict) -> None:
        self.points.append(point)
        if in_jupyter():
            self._draw()
        else:
            from tqdm import tqdm  # prints above a running progress bar
            tqdm.write('  epoch %.2f: loss %.4f, train acc %.3f, lr %g'
                       % (point['epoch'], point['loss'], point['train_acc'], point['lr']))

    def add_epoch(self, stats: dict) -> None:
        self.history.append(stats)
        self.points = []
        if in_jupyter():
            self._draw()

    def _draw(self) -> None:
        from IPython.display import display
        fig = plot_history(self.history, self.title, self.points)
        if self._display is None:
            self._display = display(fig, display_id=True)
        else:
            self._display.update(fig)
        plt.close(fig)  # or the inline backend shows it once more when the cell ends


def show_predictions(net: gluon.Block, X: nd.NDArray, y: nd.NDArray, num_rows: int = 2,
                     num_cols: int = 9, ctx=None):
    """A grid of images titled 'predicted / true'; wrong predictions in red. Returns the Figure."""
    count = min(num_rows * num_cols, X.shape[0])
    if count == 0:
        raise ValueError('show_predictions needs at least one image')
    X = X[:count]
    if ctx is not None:
        X = X.as_in_context(ctx)
    predicted = net(X).argmax(axis=1).asnumpy().astype(int)
    true = y[:count].asnumpy().astype(int)
    images = X[:, 0].asnumpy()
    fig, axes = plt.subplots(num_rows, num_cols, figsize=(1.4 * num_cols, 1.7 * num_rows))
    for ax, image, p, t, p_name, t_name in zip(
            np.ravel(axes), images, predicted, true,
            get_fashion_mnist_labels(predicted), get_fashion_mnist_labels(true)):
        ax.imshow(image, cmap='gray')
        ax.set_title(f'{p_name}\n{t_name}', fontsize=8, color='black' if p == t else 'red')
        ax.axis('off')
    for ax in np.ravel(axes)[count:]:
        ax.axis('off')
    fig.tight_layout()
    return fig


def plot_confusion(matrix: np.ndarray, labels: Sequence[str] = TEXT_LABELS, title: str = ''):
    """The confusion matrix as a heat map of row fractions with the counts; returns the Figure."""
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(fractions, cmap='Blues', vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha='center', va='center', fontsize=7,
                color='white' if fractions[row, col] > 0.5 else 'black')
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha='right')
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label='fraction of the true class')
    fig.tight_layout()
    return fig
