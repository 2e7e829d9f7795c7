"""One worker of a data-parallel job on MXNet's distributed kvstore (parameter server).

``vgg launch`` (:mod:`vgg.launcher`) starts the scheduler, the servers and the
workers; each worker runs ``vgg train --kvstore dist_sync``, which uses this
module.  What a worker does differently from a single process, and why:

* Data: worker r of n trains on its shard of the training set, the images r,
  r + n, r + 2n, ... (:func:`vgg.data.shard`; the last ``N mod n`` images are
  left out so that all workers take the same number of steps, which dist_sync
  needs).  ``--batch-size`` stays the global batch: each worker takes
  ``batch_size / n`` images per step (and splits them over its own devices).
* Gradients: the servers sum every step's gradients over the workers; every
  worker pulls the sum and applies the same SGD update to the same parameters
  (``update_on_kvstore=False``), so all workers keep identical parameters and
  worker 0 can checkpoint the optimizer state.  The trainer's ``rescale_grad``
  is ``1 / n``, so ``trainer.step(local batch)`` divides the summed gradient by
  ``n * local batch``, the global batch: the update is the single-process one.
* Start: before the first step all workers take worker 0's parameters
  (:func:`broadcast_parameters`).
* Output: only worker 0 tests the network (on the whole test set), prints the
  epoch lines and writes the run directory; its training loss and accuracy are
  those of its own shard.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Union

import mxnet as mx
from mxnet import gluon, nd

from .training import Contexts, EpochStats, train

DIST_KVSTORES = ('dist_sync', 'dist_device_sync')
# 'device' is gluon's default (sums on the devices), 'local' sums on the CPU.
KVSTORES = ('device', 'local') + DIST_KVSTORES
# What ps-lite needs in every process of a job (vgg launch sets them).
PS_ENV = ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
          'DMLC_NUM_WORKER')


@dataclass(frozen=True)
class Worker:
    """This process's place in a job; the defaults are a single process.

    Attributes
    ----------
    kvstore : str or mxnet.kvstore.KVStore
        What the trainer sums gradients through: a kvstore type for one
        process, the created distributed kvstore for a worker of a job.
    rank : int
        This worker's number, 0 .. num_workers - 1 (assigned by the scheduler).
    num_workers : int
        Workers in the job.
    """

    kvstore: Union[str, mx.kvstore.KVStore] = 'device'
    rank: int = 0
    num_workers: int = 1

    @property
    def distributed(self) -> bool:
        """Whether this process is a worker of a distributed job."""
        return not isinstance(self.kvstore, str)

    def local_batch_size(self, batch_size: int) -> int:
        """This worker's share of the global ``batch_size``.

        Raises
        ------
        ValueError
            If ``batch_size`` does not divide evenly among the workers.
        """
        if batch_size % self.num_workers:
            raise ValueError(f'batch size {batch_size} must be a multiple of the '
                             f'{self.num_workers} workers (each takes an equal share)')
        return batch_size // self.num_workers


def join(kvstore: str = 'device') -> Worker:
    """Join the job this process was started for: create a distributed kvstore, or not.

    Parameters
    ----------
    kvstore : str
        One of :data:`KVSTORES`.  A dist type connects to the scheduler named
        by the ``DMLC_*`` environment variables that ``vgg launch`` sets.

    Raises
    ------
    ValueError
        If the type is unknown, a dist type is asked for outside a launched job
        (connecting would wait forever), or a launched worker asks for a local one
        (it would train alone, and its output would clash with the other workers').
    """
    if kvstore not in KVSTORES:
        raise ValueError(f'unknown kvstore {kvstore!r}; use one of {", ".join(KVSTORES)}')
    launched = os.environ.get('DMLC_ROLE') == 'worker'
    if kvstore not in DIST_KVSTORES:
        if launched:
            raise ValueError(f'this process is a worker of a job started by vgg launch '
                             f'(DMLC_ROLE=worker) but --kvstore is {kvstore}; '
                             'pass --kvstore dist_sync')
        return Worker(kvstore)
    missing = [name for name in PS_ENV if not os.environ.get(name)]
    if missing or not launched:
        why = f'{", ".join(missing)} not set' if missing else 'DMLC_ROLE is not worker'
        raise ValueError(f'--kvstore {kvstore} runs one worker of a distributed job, but '
                         f'{why}; start the workers with: vgg launch -n WORKERS -s SERVERS '
                         f'-- vgg train --kvstore {kvstore} ...')
    store = mx.kv.create(kvstore)
    return Worker(store, store.rank, store.num_workers)


def make_trainer(net: gluon.Block, lr: float, worker: Worker = Worker(),
                 **sgd_options: Any) -> gluon.Trainer:
    """SGD on ``net``'s parameters, normalising ``step(local batch)`` by the global batch.

    For a single process this is ``gluon.Trainer(params, 'sgd', {'learning_rate': lr})``;
    ``sgd_options`` (momentum, wd, lr_scheduler: :func:`vgg.optim.sgd_options`) are added.
    """
    # A list, in the network's own order: given a dict, Gluon orders the parameters by
    # name, and names carry a per-process counter (conv8 in a fresh process, conv96 in a
    # notebook's tenth network), so saved optimizer states (momentum) would be matched
    # to other parameters on resume.
    options = dict(sgd_options, learning_rate=lr)
    params = list(net.collect_params().values())
    if not worker.distributed:
        return gluon.Trainer(params, 'sgd', options, kvstore=worker.kvstore)
    # A forward pass in predict mode (build_net's shape inference) leaves convolution
    # weights in MKLDNN's blocked layout, which MXNet 1.9.1's distributed kvstore
    # mishandles: a worker asks the server for a weight before worker 0 has stored it,
    # and the server aborts.  reset_ctx copies each parameter into a fresh array of
    # the default layout, before the kvstore first sees it.
    for param in params:
        param.reset_ctx(param.list_ctx())
    # The servers sum the workers' gradients: 1/n here and 1/(local batch) in step().
    options['rescale_grad'] = 1 / worker.num_workers
    return gluon.Trainer(params, 'sgd', options, kvstore=worker.kvstore, update_on_kvstore=False)


def broadcast_parameters(trainer: gluon.Trainer) -> None:
    """Give every worker worker 0's parameters now, and wait until each has them.

    A trainer copies worker 0's parameters to all workers when it first uses
    its kvstore (an init and a pull per parameter).  Left to the first ``step``
    that is too late: the other workers' first gradients would be taken at
    their own initial parameters.  It is also unsafe in ``allreduce_grads``:
    MXNet 1.9.1 issues that pull and the push of the gradients under the same
    key without ordering them, and with ``update_on_kvstore=False`` the server
    replaces the key's value by the summed gradients; a slow pull then brings
    back gradients instead of parameters (seen under load: a worker started
    from zeros).  So the trainer's own initialisers run here (private in 1.9.1,
    nothing public does only this) and every pull completes before any push.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    nd.waitall()


def train_worker(worker: Worker, train_iter: Iterable, test_iter: Iterable, net: gluon.Block,
                 loss: gluon.loss.Loss, trainer: gluon.Trainer, ctx: Contexts, num_epochs: int,
                 *, progress: bool = True, start_epoch: int = 0,
                 on_epoch_end: Optional[Callable[[EpochStats], None]] = None,
                 on_point: Optional[Callable[[dict], None]] = None) -> List[EpochStats]:
    """:func:`vgg.train` as one worker of a job (or as a single process), same arguments.

    Worker 0 runs ``train`` with all arguments.  The others train silently: no
    test pass, no printed lines, no progress bar, no ``on_epoch_end``.  In a job,
    all first take worker 0's parameters (:func:`broadcast_parameters`), and
    return only once their last gradients have been exchanged.

    Returns
    -------
    list of dict
        ``train``'s history; on workers other than 0, ``test_acc`` is nan, and
        on every worker loss and accuracy are those of its own shard.
    """
    if worker.distributed:
        broadcast_parameters(trainer)
    if worker.rank == 0:
        history = train(train_iter, test_iter, net, loss, trainer, ctx, num_epochs,
                        progress=progress, start_epoch=start_epoch, on_epoch_end=on_epoch_end,
                        on_point=on_point)
    else:
        with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink):
            history = train(train_iter, None, net, loss, trainer, ctx, num_epochs,
                            progress=False, start_epoch=start_epoch)
    if worker.distributed:
        # The last step's gradients may still be queued.  At exit MXNet's engine skips
        # queued operations: they would never reach the servers, and the other workers
        # would wait for them forever.
        nd.waitall()
    return history
