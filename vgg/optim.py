"""SGD's options for a run: momentum, weight decay and the learning-rate schedule.

The chapter trains with plain SGD at a constant 0.05; that stays the default
(no options at all).  Schedules are MXNet's ``lr_scheduler`` objects, counted
in updates (one per batch).  The trainer's saved state holds the optimizer and
so its schedule and update count: a resumed run continues the schedule exactly
where it stopped.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from mxnet import lr_scheduler as mx_schedules

from .config import RunConfig


def lr_scheduler(schedule: str, lr: float, epochs: int, batches_per_epoch: int,
                 warmup_epochs: float = 0) -> Optional[mx_schedules.LRScheduler]:
    """The learning rate over a run of ``epochs * batches_per_epoch`` updates.

    Parameters
    ----------
    schedule : {'constant', 'step', 'cosine'}
        Constant; x0.1 after 1/2 and again after 3/4 of the updates; or a half
        cosine from ``lr`` down to 0 at the last update.
    lr : float
        The learning rate after warm-up.
    epochs, batches_per_epoch : int
        The run's length.
    warmup_epochs : float
        Epochs over which the rate rises linearly from 0 to ``lr`` first.

    Returns
    -------
    mxnet.lr_scheduler.LRScheduler or None
        None for a constant rate without warm-up (the chapter's plain SGD).
    """
    total = epochs * batches_per_epoch
    warmup = int(round(warmup_epochs * batches_per_epoch))
    if warmup >= total:
        raise ValueError(f'a warm-up of {warmup} updates leaves none of the {total} updates '
                         f'of the run; give fewer warmup epochs')
    common = {'base_lr': lr, 'warmup_steps': warmup, 'warmup_begin_lr': 0.0}
    if schedule == 'constant':
        # A factor of 1 never changes the rate: what is left is the warm-up.
        return mx_schedules.FactorScheduler(step=total, factor=1.0, **common) if warmup else None
    if schedule == 'step':
        steps = sorted({max(warmup + 1, total // 2), max(warmup + 2, total * 3 // 4)})
        return mx_schedules.MultiFactorScheduler(step=steps, factor=0.1, **common)
    if schedule == 'cosine':
        return mx_schedules.CosineScheduler(max_update=total, final_lr=0.0, **common)
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose constant, step or cosine")


def sgd_options(config: RunConfig, batches_per_epoch: int) -> Dict[str, Any]:
    """Options for :func:`vgg.distributed.make_trainer` beyond the learning rate:
    only those a run sets, so the chapter's run gets plain SGD."""
    options: Dict[str, Any] = {}
    if config.momentum:
        options['momentum'] = config.momentum
    if config.wd:
        options['wd'] = config.wd
    schedule = lr_scheduler(config.lr_schedule, config.lr, config.epochs, batches_per_epoch,
                            config.warmup_epochs)
    if schedule is not None:
        options['lr_scheduler'] = schedule
    return options
