"""The chapter's ``train`` and ``evaluate_accuracy``, fast by default.

Printed lines and results follow gluonbook 0.8.10's ``train``.  What makes it
faster without changing the code a reader writes: the network runs as a
static graph (a HybridBlock is hybridized; the layers of an ``nn.Sequential``
are run through a hybridized view that shares their parameters), loss and
accuracy sums stay on the device, and the Python loop runs at most one batch
ahead of the computation, which keeps the engine busy while bounding memory.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

from .base import in_jupyter
from .devices import as_contexts
from .model import layers

Contexts = Union[mx.Context, Sequence[mx.Context]]
EpochStats = Dict[str, object]
# Points of the finer history per epoch (running loss and accuracy within the epoch).
POINTS_PER_EPOCH = 20


def split_batch(X: nd.NDArray, y: nd.NDArray, ctxs: List[mx.Context]
                ) -> Tuple[List[nd.NDArray], List[nd.NDArray]]:
    """Split a batch along its first axis onto the contexts (labels as the features' dtype).

    A batch smaller than the number of contexts (a last batch of 1 image on
    two devices) goes to as many contexts as it has examples.
    """
    ctxs = ctxs[:X.shape[0]]
    if y.dtype != X.dtype:
        y = y.astype(X.dtype)
    return (gluon.utils.split_and_load(X, ctxs, even_split=False),
            gluon.utils.split_and_load(y, ctxs, even_split=False))


def _correct(y_hat: nd.NDArray, y: nd.NDArray) -> nd.NDArray:
    return (y_hat.argmax(axis=1) == y.astype(y_hat.dtype)).sum()


def _total(sums: Iterable[nd.NDArray]) -> float:
    """The sum of one-element arrays (float32) as a Python float."""
    # Each value goes to float first: numpy 1.x added float32 scalars to 0 in
    # float64, numpy 2 keeps float32 (and json cannot write it); this gives
    # numpy 1.x's float64 sum under both.
    return sum(float(s.asscalar()) for s in sums)


def evaluate_accuracy(data_iter: Iterable, net: gluon.Block, ctx: Optional[Contexts] = None
                      ) -> float:
    """Fraction of correctly classified examples of ``data_iter`` (predict mode, no autograd)."""
    ctxs = as_contexts(ctx, default='cpu')
    correct = [nd.zeros((1,), ctx=c) for c in ctxs]
    n = 0
    for X, y in data_iter:
        Xs, ys = split_batch(X, y, ctxs)
        for i, (X_part, y_part) in enumerate(zip(Xs, ys)):
            correct[i] += _correct(net(X_part), y_part)
        n += y.shape[0]
    if n == 0:
        raise ValueError('evaluate_accuracy got an empty data iterator')
    return _total(correct) / n


def as_static_graph(net: gluon.Block) -> gluon.Block:
    """What :func:`train` runs: ``net`` as a static graph where that is possible.

    A HybridBlock that is not yet hybridized is hybridized with
    ``static_alloc`` and ``static_shape``.  An ``nn.Sequential`` (the chapter
    builds its network with one) cannot be, but when every layer in it is a
    HybridBlock, a hybridized ``HybridSequential`` over those same layers runs
    the same computation with the same parameter objects: training it trains
    ``net``.  Anything else is returned as it is.
    """
    if isinstance(net, gluon.HybridBlock):
        if not getattr(net, '_active', False):  # MXNet 1.x has no public "is hybridized"
            net.hybridize(static_alloc=True, static_shape=True)
        return net
    leaves = layers(net) if type(net) is nn.Sequential else []
    if not leaves or not all(isinstance(leaf, gluon.HybridBlock) for leaf in leaves):
        return net
    # The caller's prefix: no new name is drawn, so the names of blocks the reader
    # creates later (sequential2, ...) stay those of the book.
    view = nn.HybridSequential(prefix=net.prefix)
    view.add(*leaves)
    view.hybridize(static_alloc=True, static_shape=True)
    return view


def _progress_bar(total: Optional[int], epoch: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    if in_jupyter():
        # A text bar on stdout, kept when done: Jupyter draws its carriage returns in
        # place and a saved notebook (nbclient coalesces them) keeps only the final
        # state, so GitHub and nbconvert show the finished bar, never a 0% widget.
        style = {'leave': True, 'file': sys.stdout, 'ncols': 100, 'mininterval': 1.0}
    else:
        style = {'leave': False, 'file': sys.stderr, 'dynamic_ncols': True}
    return tqdm(total=total, desc=f'epoch {epoch}', unit='img', **style)


def _num_batches(train_iter: Iterable) -> Optional[int]:
    try:
        return len(train_iter)
    except TypeError:
        return None


def points_every(num_batches: int) -> int:
    """Batches between two points of the finer history: about POINTS_PER_EPOCH an epoch."""
    return max(1, round(num_batches / POINTS_PER_EPOCH))


@dataclass
class Reading:
    """An epoch's running sums after one of its batches, read from the devices."""
    batch: int
    loss: float  # the sum of the per-example losses so far
    correct: float  # correctly classified examples so far
    images: int
    lr: float  # the learning rate of this batch's update


class EpochMeter:
    """The running loss and accuracy of one epoch, summed on the devices, read one batch behind.

    Each batch adds its sums as new arrays, so the sums of a batch stay as they were while
    later batches are queued.  They are read once the next batch is queued, when the
    engine has computed them: the Python loop never waits for the batch that runs, and every
    batch's loss is checked without an extra synchronisation.  Every
    :func:`points_every`-th reading, and the last, ends a point of the finer history.

    Parameters
    ----------
    ctxs : list of Context
        Where the batch's parts are computed.
    epoch : int
        The epoch's number.
    num_batches : int or None
        Batches in the epoch, if known beforehand: then each point is made (and given to
        ``on_point``) as soon as it is read; otherwise all of them at :meth:`finish`.
    on_point : callable, optional
        Called with each point while the epoch runs.
    """

    def __init__(self, ctxs: List[mx.Context], epoch: int, num_batches: Optional[int],
                 on_point: Optional[Callable[[Dict[str, float]], None]] = None):
        self.epoch, self.num_batches, self.on_point = epoch, num_batches, on_point
        self.loss = [nd.zeros((1,), ctx=c) for c in ctxs]
        self.correct = [nd.zeros((1,), ctx=c) for c in ctxs]
        self.images = 0
        self.queued: Optional[tuple] = None  # the last batch's sums, not read yet
        self.readings: List[Reading] = []
        self.points: List[Dict[str, float]] = []
        self.last_point = Reading(0, 0.0, 0.0, 0, 0.0)  # where the next point starts

    def add(self, batch: int, losses: List[nd.NDArray], y_hats: List[nd.NDArray],
            ys: List[nd.NDArray], lr: float) -> None:
        """Add a batch just queued; then read the batch before it, computed by now."""
        for i, (l, y_hat, y_part) in enumerate(zip(losses, y_hats, ys)):
            self.loss[i] = self.loss[i] + l.sum()
            self.correct[i] = self.correct[i] + _correct(y_hat, y_part)
        self.images += sum(y_part.shape[0] for y_part in ys)
        previous = self.queued
        self.queued = (batch, list(self.loss), list(self.correct), self.images, lr)
        if previous is not None:
            self._read(*previous)

    def _read(self, batch: int, loss: List[nd.NDArray], correct: List[nd.NDArray],
              images: int, lr: float) -> None:
        reading = Reading(batch, _total(loss), _total(correct), images, lr)
        if not math.isfinite(reading.loss):
            raise FloatingPointError(f'loss became {reading.loss} in epoch {self.epoch}, batch '
                                     f'{batch}; lower the learning rate (it is {lr:g})')
        self.readings.append(reading)
        if self.num_batches and batch % points_every(self.num_batches) == 0:
            self._add_point(reading, self.num_batches, send=True)

    def _add_point(self, reading: Reading, num_batches: int, send: bool) -> None:
        before, self.last_point = self.last_point, reading
        images = reading.images - before.images
        point = {'epoch': self.epoch - 1 + reading.batch / num_batches,
                 'loss': (reading.loss - before.loss) / images,
                 'train_acc': (reading.correct - before.correct) / images, 'lr': reading.lr}
        self.points.append(point)
        if send and self.on_point is not None:
            self.on_point(point)

    def finish(self) -> Reading:
        """Read the last batch and end the finer history; returns the epoch's totals."""
        if self.queued is None:
            raise ValueError('train got an empty training iterator')
        self._read(*self.queued)
        last = self.readings[-1]
        if not self.num_batches:  # now known: the points, by the same rule
            every = points_every(last.batch)
            for reading in self.readings:
                if reading.batch % every == 0:
                    self._add_point(reading, last.batch, send=False)
        if self.last_point is not last:
            self._add_point(last, last.batch, send=bool(self.num_batches))
        return last


def train(train_iter: Iterable, test_iter: Optional[Iterable], net: gluon.Block,
          loss: gluon.loss.Loss, trainer: gluon.Trainer, ctx: Contexts, num_epochs: int, *,
          progress: bool = True, hybridize: bool = True, start_epoch: int = 0,
          on_epoch_end: Optional[Callable[[EpochStats], None]] = None,
          on_point: Optional[Callable[[Dict[str, float]], None]] = None) -> List[EpochStats]:
    """Train ``net`` and test it after every epoch, printing gluonbook's lines.

    Parameters
    ----------
    train_iter, test_iter : iterable of (X, y)
        Batches, e.g. from :func:`vgg.load_data_fashion_mnist` or a gluon DataLoader.
        ``test_iter`` None skips the test pass (``test_acc`` is nan), as the
        workers of a distributed job other than worker 0 do.
    net : mxnet.gluon.Block
        An initialised network (deferred shapes are fine).
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
    hybridize : bool
        Run the network as a static graph (:func:`as_static_graph`): same
        results up to float rounding, much faster.  False runs it as it is.
    start_epoch : int
        Epochs already done (a resumed run numbers its epochs on from here).
    on_epoch_end : callable, optional
        Called with each epoch's statistics once the epoch line is printed.
    on_point : callable, optional
        Called with each point of the finer history while the epoch runs, as
        soon as its numbers are on the host (for live curves, e.g.
        :class:`vgg.LiveCurves`).  Before the number of batches is known (the
        first epoch of an iterator without ``len``) no points are sent live.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``loss``, ``train_acc``, ``test_acc``, ``time``
        (seconds, test pass included, as gluonbook times it),
        ``images_per_sec`` (training images over the training time) and
        ``points``: the finer history, about :data:`POINTS_PER_EPOCH` dicts
        with ``epoch`` (fractional: 1.5 is half-way through epoch 2),
        ``loss`` and ``train_acc`` over the images since the previous point,
        and ``lr``, the learning rate of the last update before the point.

    Raises
    ------
    FloatingPointError
        As soon as the loss is no longer finite, naming the epoch and the batch
        (lower the learning rate).  Each batch's loss is checked once the next
        batch is queued, which needs no extra device synchronisation.
    """
    print('training on', ctx)
    ctxs = as_contexts(ctx, default='cpu')
    model = as_static_graph(net) if hybridize else net
    total = getattr(train_iter, 'num_examples', None)
    num_batches = _num_batches(train_iter)  # None until an epoch has counted them
    history = []
    for epoch in range(start_epoch + 1, start_epoch + num_epochs + 1):
        meter = EpochMeter(ctxs, epoch, num_batches, on_point)
        start = time.time()
        bar = _progress_bar(total, epoch, progress)
        try:
            for batch, (X, y) in enumerate(train_iter, 1):
                Xs, ys = split_batch(X, y, ctxs)
                with autograd.record():
                    y_hats = [model(X_part) for X_part in Xs]
                    losses = [loss(y_hat, y_part) for y_hat, y_part in zip(y_hats, ys)]
                for l in losses:
                    l.backward()
                trainer.step(X.shape[0])
                meter.add(batch, losses, y_hats, ys, trainer.learning_rate)
                if bar is not None:
                    bar.update(X.shape[0])
        finally:
            if bar is not None:
                bar.close()
        sums = meter.finish()
        num_batches = sums.batch
        train_time = time.time() - start
        test_acc = math.nan if test_iter is None else evaluate_accuracy(test_iter, model, ctxs)
        stats = {'epoch': epoch, 'loss': sums.loss / sums.images,
                 'train_acc': sums.correct / sums.images, 'test_acc': test_acc,
                 'time': time.time() - start, 'images_per_sec': sums.images / train_time,
                 'points': meter.points}
        print('epoch %d, loss %.4f, train acc %.3f, test acc %.3f, time %.1f sec'
              % (epoch, stats['loss'], stats['train_acc'], stats['test_acc'], stats['time']))
        history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history
