"""The chapter's ``train`` and ``evaluate_accuracy``, without a device sync per batch.

Printed lines and results follow gluonbook 0.8.10's ``train``; loss and
accuracy sums stay on the device and are read once per epoch, and the
Python loop runs at most one batch ahead of the computation, which keeps
the engine busy while bounding memory.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
from mxnet import autograd, gluon, nd

Contexts = Union[mx.Context, Sequence[mx.Context]]
EpochStats = Dict[str, float]


def _as_list(ctx: Optional[Contexts]) -> List[mx.Context]:
    if ctx is None:
        return [mx.cpu()]
    if isinstance(ctx, mx.Context):
        return [ctx]
    return list(ctx)


def split_batch(X: nd.NDArray, y: nd.NDArray, ctxs: List[mx.Context]
                ) -> Tuple[List[nd.NDArray], List[nd.NDArray]]:
    """Split a batch along its first axis onto every context (labels as the features' dtype)."""
    if y.dtype != X.dtype:
        y = y.astype(X.dtype)
    return (gluon.utils.split_and_load(X, ctxs, even_split=False),
            gluon.utils.split_and_load(y, ctxs, even_split=False))


def _correct(y_hat: nd.NDArray, y: nd.NDArray) -> nd.NDArray:
    return (y_hat.argmax(axis=1) == y.astype(y_hat.dtype)).sum()


def evaluate_accuracy(data_iter: Iterable, net: gluon.Block, ctx: Optional[Contexts] = None) -> float:
    """Fraction of correctly classified examples of ``data_iter`` (predict mode, no autograd)."""
    ctxs = _as_list(ctx)
    correct = [nd.zeros((1,), ctx=c) for c in ctxs]
    n = 0
    for X, y in data_iter:
        Xs, ys = split_batch(X, y, ctxs)
        for i, (X_part, y_part) in enumerate(zip(Xs, ys)):
            correct[i] += _correct(net(X_part), y_part)
        n += y.shape[0]
    if n == 0:
        raise ValueError('evaluate_accuracy got an empty data iterator')
    return sum(c.asscalar() for c in correct) / n


def _progress_bar(total: Optional[int], epoch: int, enabled: bool):
    if not enabled:
        return None
    try:  # the widget bar inside Jupyter when ipywidgets is there, else the text bar
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(total=total, desc=f'epoch {epoch}', unit='img', leave=False,
                file=sys.stderr, dynamic_ncols=True)


def _finite_loss_sum(loss_sums: List[nd.NDArray], epoch: int, batch: int,
                     trainer: gluon.Trainer) -> float:
    """The summed loss up to ``batch``; FloatingPointError if it is not finite."""
    total = sum(s.asscalar() for s in loss_sums)
    if not math.isfinite(total):
        raise FloatingPointError(f'loss became {total} in epoch {epoch}, batch {batch}; lower the '
                                 f'learning rate (it is {trainer.learning_rate:g})')
    return total


def train(train_iter: Iterable, test_iter: Optional[Iterable], net: gluon.Block,
          loss: gluon.loss.Loss, trainer: gluon.Trainer, ctx: Contexts, num_epochs: int, *,
          progress: bool = True, start_epoch: int = 0,
          on_epoch_end: Optional[Callable[[EpochStats], None]] = None) -> List[EpochStats]:
    """Train ``net`` and test it after every epoch, printing gluonbook's lines.

    Parameters
    ----------
    train_iter, test_iter : iterable of (X, y)
        Batches, e.g. from :func:`vgg.load_data_fashion_mnist` or a gluon DataLoader.
        ``test_iter`` None skips the test pass (``test_acc`` is nan), as the
        workers of a distributed job other than worker 0 do.
    net : mxnet.gluon.Block
        An initialised network.
    loss : mxnet.gluon.loss.Loss
        Per-example loss, e.g. ``SoftmaxCrossEntropyLoss()``.
    trainer : mxnet.gluon.Trainer
        Steps with the batch size, as gluonbook does.
    ctx : mxnet.Context or list of Context
        Where to compute; a list splits every batch across its contexts.
    num_epochs : int
        Epochs to run.
    progress : bool
        Show a progress bar (images/s, time left) within each epoch.
    start_epoch : int
        Epochs already done (a resumed run numbers its epochs on from here).
    on_epoch_end : callable, optional
        Called with each epoch's statistics once the epoch line is printed.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``loss``, ``train_acc``, ``test_acc``, ``time``
        (seconds, test pass included, as gluonbook times it) and
        ``images_per_sec`` (training images over the training time).

    Raises
    ------
    FloatingPointError
        As soon as the loss is no longer finite, naming the epoch and the batch
        (lower the learning rate).  Each batch's loss is checked once the next
        batch is queued, which needs no extra device synchronisation.
    """
    print('training on', ctx)
    ctxs = _as_list(ctx)
    total = getattr(train_iter, 'num_examples', None)
    history = []
    for epoch in range(start_epoch + 1, start_epoch + num_epochs + 1):
        loss_sum = [nd.zeros((1,), ctx=c) for c in ctxs]
        correct = [nd.zeros((1,), ctx=c) for c in ctxs]
        n, batch, start, previous = 0, 0, time.time(), None
        bar = _progress_bar(total, epoch, progress)
        try:
            for batch, (X, y) in enumerate(train_iter, 1):
                Xs, ys = split_batch(X, y, ctxs)
                with autograd.record():
                    y_hats = [net(X_part) for X_part in Xs]
                    losses = [loss(y_hat, y_part) for y_hat, y_part in zip(y_hats, ys)]
                for l in losses:
                    l.backward()
                trainer.step(X.shape[0])
                for i, (l, y_hat, y_part) in enumerate(zip(losses, y_hats, ys)):
                    # A new array, not +=: ``previous`` must keep the sums up to the last batch.
                    loss_sum[i] = loss_sum[i] + l.sum()
                    correct[i] += _correct(y_hat, y_part)
                # Wait for the previous batch only: one batch stays queued behind the
                # running one, so the engine never idles and memory stays bounded; its
                # loss sum, ready by then, is checked for free.
                if previous is not None:
                    _finite_loss_sum(previous, epoch, batch - 1, trainer)
                previous = list(loss_sum)
                n += X.shape[0]
                if bar is not None:
                    bar.update(X.shape[0])
        finally:
            if bar is not None:
                bar.close()
        train_loss = _finite_loss_sum(loss_sum, epoch, batch, trainer) / n
        train_acc = sum(c.asscalar() for c in correct) / n
        train_time = time.time() - start
        test_acc = math.nan if test_iter is None else evaluate_accuracy(test_iter, net, ctxs)
        stats = {'epoch': epoch, 'loss': train_loss, 'train_acc': train_acc,
                 'test_acc': test_acc, 'time': time.time() - start,
                 'images_per_sec': n / train_time}
        print('epoch %d, loss %.4f, train acc %.3f, test acc %.3f, time %.1f sec'
              % (epoch, stats['loss'], stats['train_acc'], stats['test_acc'], stats['time']))
        history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history
