"""A whole training run from a :class:`RunConfig`: what ``vgg train``, the notebooks and the
workers of a distributed job all call.

:func:`fit` seeds, loads the data, builds the network and its trainer,
restores a run it resumes, trains with :func:`vgg.train`, and saves every
epoch into a run directory (:class:`vgg.Run`).  In a distributed job
worker 0 alone writes the run directory and says what it does (here), and
alone tests the network, prints the epoch lines and reports each epoch
(:func:`vgg.distributed.train_worker`); the other workers only read the run
directory to resume.
"""
from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import gluon

from .base import allocation_failure
from .config import RunConfig
from .data import load_data_fashion_mnist
from .devices import CtxSpec, as_contexts, environment
from .distributed import Worker, join, make_trainer, train_worker
from .model import build_net
from .optim import sgd_options
from .plots import plot_history, save_figure
from .runs import CURVES, Run
from .training import EpochStats
from .transfer import init_from, load_model_zoo_weights


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fit`; says what was saved.

    Attributes
    ----------
    run : Run or None
        The run directory, if the run had one.
    saved : int
        Epochs saved in it (all finished epochs).
    epochs : int
        Epochs the run was to have.
    """

    def __init__(self, run: Optional[Run], saved: int, epochs: int):
        self.run, self.saved, self.epochs = run, saved, epochs
        super().__init__(self.message())

    def message(self) -> str:
        if self.run is None:
            return 'nothing was saved (give fit an out folder to be able to resume)'
        if not self.run.exists():
            return 'nothing was saved yet'
        return f'{self.saved} of {self.epochs} epochs are saved in {self.run.path}'


class OutOfMemory(MemoryError):
    """The memory ran out during :func:`fit`; says which settings to lower and what was saved.

    Attributes
    ----------
    reason : str
        What numpy or MXNet said.
    config : RunConfig
        The run's settings.
    run : Run or None
        The run directory, if this process writes one.
    saved : int
        Epochs saved in it.
    resumed : bool
        Whether the run was resumed (its settings cannot change then).
    """

    def __init__(self, reason: str, config: RunConfig, run: Optional[Run], saved: int,
                 resumed: bool):
        self.reason, self.config, self.run, self.saved = reason, config, run, saved
        self.resumed = resumed
        super().__init__(self.message())

    def message(self, flag: Callable[[str], str] = str) -> str:
        """The one-line message; ``flag`` names a setting (``vgg train`` gives its flags)."""
        c = self.config
        text = (f'out of memory ({self.reason}) with batch size {c.batch_size}, resize '
                f'{c.resize} and ratio {c.ratio:g}: lower {flag("batch_size")} or '
                f'{flag("resize")}, or raise {flag("ratio")} (fewer channels)')
        if self.resumed:
            text += ', in a new run (a run resumes with its own settings)'
        if self.run is not None and self.run.exists():
            text += f'; {self.saved} of {c.epochs} epochs are saved in {self.run.path}'
        return text


def seed_everything(seed: int) -> None:
    """Seed MXNet, numpy and Python's random module."""
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _config(config: Union[None, RunConfig, Mapping[str, Any]], run: Optional[Run],
            resume: bool) -> RunConfig:
    """The configuration to run: a new one, or a resumed run's with its allowed changes."""
    if not resume:
        if isinstance(config, RunConfig):
            return config
        return RunConfig.from_settings(config or {})
    saved = run.config()
    if config is None:
        return saved
    given = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    try:
        return saved.resumed(given)
    except ValueError as err:
        raise ValueError(f'{err} ({run.path})') from None


def fit(config: Union[None, RunConfig, Mapping[str, Any]] = None, out: Optional[str] = None, *,
        resume: bool = False, force: bool = False, ctx: CtxSpec = None,
        data_dir: Optional[str] = None, kvstore: str = 'device', progress: bool = True,
        on_epoch_end: Optional[Callable[[EpochStats], None]] = None,
        on_point: Optional[Callable[[dict], None]] = None) -> List[EpochStats]:
    """Run a whole training run: seed, data, network, trainer, resume, train, save every epoch.

    Parameters
    ----------
    config : RunConfig or dict, optional
        The run's settings (a dict holds some of them; the rest are the
        chapter's defaults).  With ``resume``, None takes the saved settings;
        anything given must agree with them, except ``epochs``, which may grow.
    out : str, optional
        Run directory: the configuration, data folder and machine, metrics and
        learning curves, and a checkpoint after every epoch.  None saves nothing.
    resume : bool
        Continue the run in ``out`` from its last complete epoch.
    force : bool
        Replace the run ``out`` holds (only once the new run is ready to start).
    ctx : str, Context or list of Context, optional
        Where to train; None is :func:`vgg.try_gpu`.  Several contexts split every batch.
    data_dir : str, optional
        Fashion-MNIST folder; default a resumed run's own, else the usual search
        (:func:`vgg.data.candidate_dirs`).  The folder used is recorded.
    kvstore : str
        'device' or 'local' for one process; 'dist_sync' or 'dist_device_sync'
        for a worker of a job started by ``vgg launch``.
    progress : bool
        Show a progress bar within each epoch.
    on_epoch_end : callable, optional
        Called with each epoch's statistics once the epoch is saved.
    on_point : callable, optional
        Called with each point of the finer history while training (see
        :func:`vgg.train`); :class:`vgg.LiveCurves` draws them.

    Returns
    -------
    list of dict
        The run's history (every epoch, those of earlier sessions included, as
        :func:`vgg.train` returns them).

    Raises
    ------
    ValueError
        For invalid settings, data or run directories.
    FloatingPointError
        When the loss stops being finite; says what is saved.
    OutOfMemory
        When numpy or MXNet cannot allocate memory (a MemoryError); says which
        settings to lower and what is saved.
    Interrupted
        On Ctrl-C (a KeyboardInterrupt); says what is saved.
    """
    if resume and force:
        raise ValueError('resume and force exclude each other')
    run = Run(out) if out else None
    if resume and run is None:
        raise ValueError('resume needs out, the run directory to continue')
    config = _config(config, run, resume)
    ctxs = as_contexts(ctx, default='auto')
    worker = join(kvstore)
    # Worker 0 writes the run directory and prints what it does with it; the other
    # workers of a job read it only to resume (its checkpoint and configuration).
    # What each worker does within an epoch is train_worker's.
    writer = run if worker.rank == 0 else None
    state = _RunState(config, run, writer, worker, ctxs, resume, force)
    try:
        if writer is None:
            return _train_run(state, data_dir, progress, on_epoch_end, on_point)
        writer.prepare('keep' if resume else 'overwrite' if force else 'refuse')
        with writer.lock():
            return _train_run(state, data_dir, progress, on_epoch_end, on_point)
    except (MemoryError, mx.base.MXNetError) as err:
        reason = allocation_failure(err)
        if reason is None:
            raise
        # From the disk: the failure may come before the state read the run (or, with
        # force, before the old run it would replace is cleared).
        saved = len(writer.history()) if writer is not None and writer.exists() else 0
        raise OutOfMemory(reason, config, writer, saved, resume) from None


@dataclass
class _RunState:
    """What one call of :func:`fit` trains: its settings, its run directory and its part in it."""

    config: RunConfig
    run: Optional[Run]  # the run directory, if any
    writer: Optional[Run]  # the run directory on the worker that writes it, else None
    worker: Worker
    ctxs: List[mx.Context]
    resume: bool
    force: bool
    # The run's finished epochs: read once (resuming) when the run is held, then each
    # epoch is added once it is saved.
    history: List[EpochStats] = field(default_factory=list)


def _train_run(state: _RunState, data_dir: Optional[str], progress: bool,
               on_epoch_end: Optional[Callable[[EpochStats], None]],
               on_point: Optional[Callable[[dict], None]]) -> List[EpochStats]:
    """The body of :func:`fit`, once the run directory (if this process writes it) is held."""
    config, run, writer = state.config, state.run, state.writer
    worker, ctxs, resume, history = state.worker, state.ctxs, state.resume, state.history
    if resume:
        history.extend(run.history())
        run.check_epochs(config.epochs, len(history))
    done = len(history)
    if done >= config.epochs:
        if writer is not None:
            print(f'{run.path}: all {config.epochs} epochs are done; give more epochs '
                  '(vgg train --epochs N) to train on')
        return history
    data_dir = data_dir or (run.data_dir() if resume else None)
    # A resumed run must not replay the first epochs' shuffling and dropout,
    # and each worker of a job shuffles its shard and drops units its own way.
    seed = None if config.seed is None else config.seed + done + worker.rank
    if seed is not None:
        seed_everything(seed)
    train_iter, test_iter = load_data_fashion_mnist(
        worker.local_batch_size(config.batch_size), resize=config.resize, root=data_dir,
        ctx=ctxs[0], max_samples=config.max_samples, seed=seed,
        num_parts=worker.num_workers, part_index=worker.rank)
    net = build_net(config.arch, config.ratio, config.resize, ctx=ctxs,
                    initializer=config.init)
    if not resume:
        _start_from(net, config, ctxs, writer is not None)
    trainer = make_trainer(net, config.lr, worker, **sgd_options(config, len(train_iter)))
    if resume:
        epoch = run.restore(net, trainer, ctxs)
        if config.lr_schedule == 'constant' and not config.warmup_epochs:
            trainer.set_learning_rate(config.lr)  # a lower rate given to resume
        if writer is not None:
            print(f'resuming {run.path} after epoch {epoch} of {config.epochs}')
    # Nothing of an old run is removed before this point: the new one can start.
    if writer is not None:
        session = environment(ctxs)
        if resume:
            writer.update_config(config)
            writer.add_session(train_iter.data_dir, session)
        else:
            if state.force:
                writer.clear()
            writer.start(config, train_iter.data_dir, session)

    def epoch_end(stats: EpochStats) -> None:
        # Loss and accuracy can stay finite while weights are not (ReLU turns NaN into 0):
        # such an epoch is never saved as a good one.
        _check_finite(net, stats['epoch'], trainer.learning_rate)
        if writer is not None:
            writer.save_epoch(net, trainer, history + [stats])
        history.append(stats)  # saved: what Interrupted and FloatingPointError count
        if writer is not None:
            save_figure(plot_history(history, title=os.path.basename(writer.path)),
                        writer.file(CURVES))
        if on_epoch_end is not None:
            on_epoch_end(stats)
    try:
        train_worker(worker, train_iter, test_iter, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                     trainer, ctxs[0] if len(ctxs) == 1 else ctxs, config.epochs - done,
                     progress=progress, start_epoch=done, on_epoch_end=epoch_end,
                     on_point=on_point)
    except KeyboardInterrupt:
        raise Interrupted(writer, len(history) if writer else 0, config.epochs) from None
    except FloatingPointError as err:
        if writer is None:
            raise
        saved, way = len(history), ''
        if saved and config.lr_schedule == 'constant' and not config.warmup_epochs:
            way = (f'; resume from there with a lower learning rate: vgg train --resume --out '
                   f'{writer.path} --lr {config.lr / 10:g} (or fit(..., resume=True) with '
                   f"{{'lr': {config.lr / 10:g}}})")
        raise FloatingPointError(f'{err}; {saved} of {config.epochs} epochs are saved in '
                                 f'{writer.path}{way}') from None
    return history


def _check_finite(net: gluon.Block, epoch: int, lr: float) -> None:
    """FloatingPointError if a parameter holds NaN or infinity (counted)."""
    bad = total = 0
    for param in net.collect_params().values():
        values = param.data().asnumpy()
        bad += int(values.size - np.isfinite(values).sum())
        total += values.size
    if bad:
        raise FloatingPointError(f'the parameters became non-finite in epoch {epoch} ({bad:,} '
                                 f'of {total:,} values are NaN or infinite, though the loss is '
                                 f'finite); lower the learning rate (it is {lr:g})')


def _start_from(net: gluon.Block, config: RunConfig, ctxs: List[mx.Context],
                verbose: bool) -> None:
    """Trained weights for a new run: a shallower run's (init_from) or the model zoo's."""
    if config.init_from:
        copied = init_from(net, load_net(config.init_from, ctxs))
        message = f'started from {config.init_from}: {", ".join(copied)} copied'
    elif config.model_zoo:
        adapted = load_model_zoo_weights(net, config.model_zoo, config.model_zoo_params)
        message = f"started from the model zoo's {config.model_zoo}" + (
            f' ({"; ".join(adapted)})' if adapted else '')
    else:
        return
    if verbose:
        print(message)


def load_net(run_dir: str, ctx: CtxSpec = None) -> gluon.HybridBlock:
    """The trained network of a run directory's last completed epoch, built from its config.

    The run may be training meanwhile: the network is that of a whole checkpoint,
    the last one saved when it was read.

    Raises
    ------
    ValueError
        If the folder holds no run, no completed epoch, or a checkpoint that is
        missing, corrupt or of another network.
    MemoryError
        If there is not enough memory to build or load it.
    """
    return load_net_epoch(run_dir, ctx)[0]


def load_net_epoch(run_dir: str, ctx: CtxSpec = None) -> Tuple[gluon.HybridBlock, int]:
    """:func:`load_net`'s network and the epoch it was saved after (a run that is training
    may have saved more by the time it is used)."""
    run, ctxs = Run(run_dir), as_contexts(ctx, default='auto')
    config = run.config()
    # Every Gluon block is in a reference cycle (with its name scope), so a network the
    # caller dropped keeps its parameters until Python's cycle collector runs, and it runs
    # after so many new objects, not bytes: free such networks before building another.
    gc.collect()
    net = build_net(config.arch, config.ratio, config.resize, ctx=ctxs)
    epoch = run.load_params(net, ctxs)
    # MXNet frees an array only once its engine has run every operation queued on it: the
    # random initialisation and the shape pass above, which load_parameters made moot.  A
    # loop of load_net calls that waits for nothing would queue them faster than they run.
    mx.nd.waitall()
    return net, epoch
