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
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import mxnet as mx
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

Contexts = Union[mx.Context, Sequence[mx.Context]]
EpochStats = Dict[str, object]
# Points of the finer history per epoch (running loss and accuracy within the epoch).
POINTS_PER_EPOCH = 20


def _as_list(ctx: Optional[Contexts]) -> List[mx.Context]:
    if ctx is None:
        return [mx.cpu()]
    if isinstance(ctx, mx.Context):
        return [ctx]
    return list(ctx)


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


def _sequential_layers(net: nn.Sequential) -> Optional[List[gluon.HybridBlock]]:
    """The layers of a (nested) ``nn.Sequential`` in order, or None if one is not hybridizable."""
    layers = []
    for child in net._children.values():
        if type(child) is nn.Sequential:
            inner = _sequential_layers(child)
            if inner is None:
                return None
            layers.extend(inner)
        elif isinstance(child, gluon.HybridBlock):
            layers.append(child)
        else:
            return None
    return layers


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
    layers = _sequential_layers(net) if type(net) is nn.Sequential else None
    if not layers:
        return net
    # The caller's prefix: no new name is drawn, so the names of blocks the reader
    # creates later (sequential2, ...) stay those of the book.
    view = nn.HybridSequential(prefix=net.prefix)
    view.add(*layers)
    view.hybridize(static_alloc=True, static_shape=True)
    return view


def in_jupyter() -> bool:
    """Whether this code runs in a Jupyter kernel (live, or executed headless by nbclient)."""
    zmqshell = sys.modules.get('ipykernel.zmqshell')  # loaded by every Jupyter kernel
    if zmqshell is None:
        return False
    # Subclasses count too (Google Colab's shell is one).
    return isinstance(sys.modules['IPython'].get_ipython(), zmqshell.ZMQInteractiveShell)


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


def _finite(loss_sum: float, epoch: int, batch: int, trainer: gluon.Trainer) -> float:
    """``loss_sum``, or FloatingPointError if it is not finite."""
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f'loss became {loss_sum} in epoch {epoch}, batch {batch}; lower '
                                 f'the learning rate (it is {trainer.learning_rate:g})')
    return loss_sum


def _num_batches(train_iter: Iterable) -> Optional[int]:
    try:
        return len(train_iter)
    except TypeError:
        return None


class _Sums:
    """Per-context loss and correct-prediction sums, kept on the devices.

    Every update makes new arrays, so a snapshot (:meth:`snapshot`) keeps the
    sums up to that batch while training goes on; it is read only once the
    computation has passed it, so reading never stalls the engine.
    """

    def __init__(self, ctxs: List[mx.Context]):
        self.loss = [nd.zeros((1,), ctx=c) for c in ctxs]
        self.correct = [nd.zeros((1,), ctx=c) for c in ctxs]
        self.n = 0

    def add(self, losses, y_hats, ys, batch_size: int) -> None:
        for i, (l, y_hat, y_part) in enumerate(zip(losses, y_hats, ys)):
            self.loss[i] = self.loss[i] + l.sum()
            self.correct[i] = self.correct[i] + _correct(y_hat, y_part)
        self.n += batch_size

    def snapshot(self, lr: float) -> Tuple[List[nd.NDArray], List[nd.NDArray], int, float]:
        return list(self.loss), list(self.correct), self.n, lr


def _read(snapshot) -> Tuple[float, float, int, float]:
    """(loss sum, correct count, images, learning rate) of a snapshot; waits for it."""
    loss, correct, n, lr = snapshot
    return sum(s.asscalar() for s in loss), sum(c.asscalar() for c in correct), n, lr


_ORIGIN = (0, 0.0, 0.0, 0, 0.0)  # the cumulative mark before an epoch's first batch


def _point(mark: tuple, before: tuple, epoch: int, num_batches: int) -> Dict[str, float]:
    """The point of the finer history between two cumulative marks (batch, loss, correct, n, lr)."""
    images = mark[3] - before[3]
    return {'epoch': epoch - 1 + mark[0] / num_batches, 'loss': (mark[1] - before[1]) / images,
            'train_acc': (mark[2] - before[2]) / images, 'lr': mark[4]}


def _points(cumulative: List[Tuple[int, float, float, int, float]], epoch: int,
            num_batches: int) -> List[Dict[str, float]]:
    """About POINTS_PER_EPOCH evenly spaced points of an epoch from its cumulative sums."""
    step = max(1, len(cumulative) // POINTS_PER_EPOCH)
    chosen = cumulative[step - 1::step]
    if chosen[-1] is not cumulative[-1]:
        chosen[-1] = cumulative[-1]
    return [_point(mark, before, epoch, num_batches)
            for before, mark in zip([_ORIGIN] + chosen, chosen)]


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
    ctxs = _as_list(ctx)
    model = as_static_graph(net) if hybridize else net
    total = getattr(train_iter, 'num_examples', None)
    num_batches = _num_batches(train_iter)
    history = []
    for epoch in range(start_epoch + 1, start_epoch + num_epochs + 1):
        # Until the number of batches is known (after one epoch), a point per batch.
        every = max(1, round(num_batches / POINTS_PER_EPOCH)) if num_batches else 1
        # With the number of batches known, each point is made (and sent) as it is read;
        # else (the first epoch of an iterator without len) all at the epoch's end.
        known, live = num_batches, []
        sums = _Sums(ctxs)
        marks: List[Tuple[int, tuple]] = []  # (batch, snapshot) not read yet
        cumulative: List[tuple] = []  # (batch, loss, correct, n, lr)
        batch, start, previous = 0, time.time(), None
        bar = _progress_bar(total, epoch, progress)

        def read_marks(upto: int) -> None:
            while marks and marks[0][0] <= upto:
                mark_batch, snapshot = marks.pop(0)
                cumulative.append((mark_batch, *_read(snapshot)))
                _finite(cumulative[-1][1], epoch, mark_batch, trainer)
                if known:
                    before = cumulative[-2] if len(cumulative) > 1 else _ORIGIN
                    live.append(_point(cumulative[-1], before, epoch, known))
                    if on_point is not None:
                        on_point(live[-1])
        try:
            for batch, (X, y) in enumerate(train_iter, 1):
                Xs, ys = split_batch(X, y, ctxs)
                with autograd.record():
                    y_hats = [model(X_part) for X_part in Xs]
                    losses = [loss(y_hat, y_part) for y_hat, y_part in zip(y_hats, ys)]
                for l in losses:
                    l.backward()
                trainer.step(X.shape[0])
                sums.add(losses, y_hats, ys, X.shape[0])
                # Wait for the previous batch only: one batch stays queued behind the
                # running one, so the engine never idles and memory stays bounded; its
                # loss sum, ready by then, is checked for free, and so are the points.
                if previous is not None:
                    _finite(sum(s.asscalar() for s in previous), epoch, batch - 1, trainer)
                    read_marks(batch - 1)
                previous = list(sums.loss)
                if batch % every == 0:
                    marks.append((batch, sums.snapshot(trainer.learning_rate)))
                if bar is not None:
                    bar.update(X.shape[0])
        finally:
            if bar is not None:
                bar.close()
        if batch == 0:
            raise ValueError('train got an empty training iterator')
        if not marks or marks[-1][0] != batch:
            marks.append((batch, sums.snapshot(trainer.learning_rate)))
        read_marks(batch)
        num_batches = batch
        points = live if known else _points(cumulative, epoch, num_batches)
        _, loss_sum, correct, n, _ = cumulative[-1]
        train_time = time.time() - start
        test_acc = math.nan if test_iter is None else evaluate_accuracy(test_iter, model, ctxs)
        stats = {'epoch': epoch, 'loss': loss_sum / n, 'train_acc': correct / n,
                 'test_acc': test_acc, 'time': time.time() - start,
                 'images_per_sec': n / train_time, 'points': points}
        print('epoch %d, loss %.4f, train acc %.3f, test acc %.3f, time %.1f sec'
              % (epoch, stats['loss'], stats['train_acc'], stats['test_acc'], stats['time']))
        history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history
