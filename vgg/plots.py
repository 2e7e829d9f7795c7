"""Figures for the chapter: learning curves, predictions on test images, confusion matrices."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from mxnet import gluon, nd

from .data import TEXT_LABELS, get_fashion_mnist_labels
from .runs import atomic_write


def save_figure(fig, path: str) -> None:
    """Atomically save a matplotlib figure as PNG, then close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    finally:
        plt.close(fig)


def plot_history(history: Sequence[dict], title: Optional[str] = None):
    """Learning curves: loss and train/test accuracy; returns the matplotlib Figure.

    Epochs that carry a finer history (``points``, see :func:`vgg.train`) are
    drawn from it, many points per epoch; the epoch means are drawn as markers
    on top, and the test accuracy once per epoch.
    """
    if not history:
        raise ValueError('plot_history needs at least one epoch of history')
    epochs = [h['epoch'] for h in history]
    points = [p for h in history for p in h.get('points') or ()]
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
    ax_loss.plot(epochs, [h['loss'] for h in history], label=labels[0], **mean_style)
    ax_acc.plot(epochs, [h['train_acc'] for h in history], label=labels[1], **mean_style)
    ax_acc.plot(epochs, [h['test_acc'] for h in history], 's--', color='C1', label='test acc')
    ax_loss.set_ylabel('loss')
    ax_acc.set_ylabel('accuracy')
    first = min([epochs[0]] + [p['epoch'] for p in points]) if points else epochs[0]
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel('epoch')
        ax.set_xticks(range(int(first) if points else epochs[0], epochs[-1] + 1))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
