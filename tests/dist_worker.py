"""A worker of the distributed tests, run by vgg launch:
python tests/dist_worker.py DIR [EPOCHS [own]].

Trains ``small_cnn`` (dropout-free, so the run is deterministic) from
``DIR/init.params`` on its shard of a synthetic training set, unshuffled, with
the global batch ``BATCH``, through :mod:`vgg.distributed` as ``vgg train``
does; then writes its parameters and history to ``DIR/worker-RANK.params`` and
``DIR/worker-RANK.json``.  With ``own``, workers other than 0 start from
parameters of their own draw instead, which the job must replace by worker 0's.
"""
import json
import os
import sys

import vgg  # noqa: F401  (before MXNet, as the command line does)

# isort: split
import mxnet as mx
from mxnet import gluon

# tests/ is on sys.path: Python puts a script's own folder there (python tests/dist_worker.py).
from helpers import small_cnn, synthetic_split
from vgg.data import FashionMNISTIter, shard
from vgg.distributed import join, make_trainer, train_worker

NUM_TRAIN, NUM_TEST, BATCH, LR, EPOCHS = 128, 64, 32, 0.1, 4


def datasets(num_parts: int = 1, part_index: int = 0):
    """(train, test) iterators: part ``part_index`` of the training set, the whole test set."""
    images, labels = synthetic_split(NUM_TRAIN, seed=0)
    train_iter = FashionMNISTIter(shard(images, num_parts, part_index),
                                  shard(labels, num_parts, part_index), BATCH // num_parts)
    return train_iter, FashionMNISTIter(*synthetic_split(NUM_TEST, seed=1), BATCH)


def main(directory: str, epochs: int, own_start: bool = False) -> None:
    worker = join('dist_sync')
    train_iter, test_iter = datasets(worker.num_workers, worker.rank)
    net = small_cnn()
    net.load_parameters(os.path.join(directory, 'init.params'), ctx=mx.cpu())
    if own_start and worker.rank > 0:
        mx.random.seed(worker.rank)
        for param in net.collect_params().values():
            param.set_data(mx.nd.random.normal(shape=param.shape))
    trainer = make_trainer(net, LR, worker)
    history = train_worker(worker, train_iter, test_iter, net,
                           gluon.loss.SoftmaxCrossEntropyLoss(), trainer, mx.cpu(), epochs,
                           progress=False)
    stem = os.path.join(directory, f'worker-{worker.rank}')
    net.save_parameters(stem + '.params')
    with open(stem + '.json', 'w', encoding='utf-8') as f:
        json.dump(history, f)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else EPOCHS, sys.argv[3:] == ['own'])
