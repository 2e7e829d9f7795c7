"""Helpers shared by the test modules (and tests/dist_worker.py): synthetic Fashion-MNIST
files, a tiny network, running ``python -m vgg`` and making run directories.

Test modules import from here, never from each other nor conftest.py
(which holds only fixtures).  pytest puts tests/ on sys.path (rootdir-relative
conftest, no __init__.py), and ``python tests/dist_worker.py`` has tests/ as its
script folder, so ``import helpers`` works in both.
"""
import dataclasses
import gzip
import os
import re
import struct
import subprocess
import sys
import time

import vgg  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)

# isort: split
import mxnet as mx
import numpy as np
from mxnet import gluon, init, nd
from mxnet.gluon import nn

from vgg.base import file_digest
from vgg.config import RunConfig
from vgg.data import MXNET_MIRROR_SHA1, OFFICIAL_MD5
from vgg.model import build_net
from vgg.runs import Run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'fashion-mnist')

# One epoch line of vgg.train (the chapter's format); groups: epoch, loss, train acc, test acc.
LINE = re.compile(r'epoch (\d+), loss (\d+\.\d{4}), train acc (\d\.\d{3}), test acc (\d\.\d{3}), '
                  r'time \d+\.\d sec')


def identify(path: str) -> str:
    """Where a data file comes from: 'official', 'mxnet-mirror' or 'unknown'."""
    name = os.path.basename(path)
    if name in OFFICIAL_MD5 and file_digest(path, 'md5') == OFFICIAL_MD5[name]:
        return 'official'
    if name in MXNET_MIRROR_SHA1 and file_digest(path, 'sha1') == MXNET_MIRROR_SHA1[name]:
        return 'mxnet-mirror'
    return 'unknown'


def summary_as_dict(result) -> dict:
    """A :class:`vgg.Summary` as plain JSON-ready values: the rows as dicts (shapes as lists)."""
    rows = [dict(dataclasses.asdict(row), output_shape=list(row.output_shape))
            for row in result.rows]
    return {'input_shape': list(result.input_shape), 'rows': rows,
            'total_params': result.total_params, 'total_macs': result.total_macs,
            'total_activation_bytes': result.total_activation_bytes,
            'param_bytes': result.param_bytes}


# Synthetic Fashion-MNIST files.
def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 images (N, 28, 28) or labels (N,) as an IDX file."""
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 3:
        header = struct.pack('>IIII', 2051, array.shape[0], array.shape[1], array.shape[2])
    else:
        header = struct.pack('>II', 2049, array.shape[0])
    return header + array.tobytes()


def synthetic_split(num: int, seed: int = 0):
    """Learnable images: class k is a bright 6x6 square at a class-specific place, plus noise."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, num).astype(np.uint8)
    images = rng.randint(0, 60, (num, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + 12 * row:10 + 12 * row, 1 + 5 * col:7 + 5 * col] = 255
    return images, labels


def write_dataset(directory, num_train=96, num_test=40, compress=True, seed=0):
    """Write the four IDX files (gzip or raw) of a synthetic set; return their arrays."""
    os.makedirs(directory, exist_ok=True)
    arrays = {'train': synthetic_split(num_train, seed),
              'test': synthetic_split(num_test, seed + 1)}
    names = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
    for split, (images, labels) in arrays.items():
        for name, array in zip(names[split], (images, labels)):
            data = idx_bytes(array)
            if compress:
                with gzip.open(os.path.join(directory, name + '.gz'), 'wb') as f:
                    f.write(data)
            else:
                with open(os.path.join(directory, name), 'wb') as f:
                    f.write(data)
    return arrays


def synthetic_batches(num, batch_size, seed):
    """``synthetic_split`` as a list of (X, y) batches of NDArrays, X scaled to [0, 1]."""
    images, labels = synthetic_split(num, seed)
    X = nd.array(images[:, None] / 255, dtype='float32')
    y = nd.array(labels, dtype='int32')
    return [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, num, batch_size)]


# A tiny network.
def small_cnn():
    """A small dropout-free network: the same updates whatever the random state."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, kernel_size=5, activation='relu'), nn.MaxPool2D(2, 2),
            nn.Dense(32, activation='relu'), nn.Dense(10))
    return net


# The command line.
# A tiny, quick configuration: ratio 16, 32x32 images.
QUICK = ['--resize', '32', '--ratio', '16', '--batch-size', '32', '--ctx', 'cpu']


def run_cli(*args, env=None, timeout=300):
    """``python -m vgg ARGS`` in a subprocess, from the repository; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, '-m', 'vgg', *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args, **popen_args):
    """``python -m vgg ARGS`` started in the background (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, '-m', 'vgg', *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_args)


def make_run(path, done=1, data_dir=None, params_arch=None, **settings):
    """A run directory with ``done`` epochs of an untrained network (no training, so quick).

    ``settings`` override the quick configuration (vgg11, ratio 16, resize 32,
    3 epochs, batch 32); ``params_arch`` saves the parameters of another
    architecture instead, as a mismatched checkpoint.  Every saved epoch has the
    fields :meth:`vgg.Run.history` requires (numbers) and a one-point ``points``.
    """
    config = RunConfig(**dict(dict(arch='vgg11', ratio=16, resize=32, epochs=3, batch_size=32),
                              **settings))
    run = Run(str(path))
    run.prepare()
    run.start(config, data_dir)
    net = build_net(params_arch or config.arch, config.ratio, config.resize)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': config.lr})
    history = []
    for epoch in range(1, done + 1):
        history.append({'epoch': epoch, 'loss': 2.3, 'train_acc': 0.1, 'test_acc': 0.1,
                        'time': 1.0, 'images_per_sec': 100.0,
                        'points': [{'epoch': float(epoch), 'loss': 2.3, 'train_acc': 0.1}]})
        run.save_epoch(net, trainer, history)
    return run


# Distributed jobs (tests/test_distributed.py, tests/test_launcher.py).
WORKER = os.path.join(REPO, 'tests', 'dist_worker.py')
STARTED = re.compile(r'(scheduler|server \d+|worker \d+) pid (\d+)')
JOB_TIMEOUT = 150  # seconds: a test job takes well under a minute on 2 cores


def started_pids(err: str):
    """{'scheduler': pid, 'server 0': pid, 'worker 0': pid, ...} from the launcher's first line."""
    return {name: int(pid) for name, pid in STARTED.findall(err.split('\n')[0])}


def start_logged(tmp_path, *args):
    """``python -m vgg ARGS`` in the background, its output going to files;
    returns (process, (stdout path, stderr path))."""
    paths = tmp_path / 'stdout', tmp_path / 'stderr'
    with open(paths[0], 'w') as out, open(paths[1], 'w') as err:
        process = subprocess.Popen([sys.executable, '-m', 'vgg', *map(str, args)], cwd=REPO,
                                   stdout=out, stderr=err)
    return process, paths


def wait_for_output(process, paths, text: str, seconds: float = JOB_TIMEOUT) -> None:
    """Wait until the stdout of a :func:`start_logged` process holds ``text``; fail at once,
    showing its stderr, if it ends first."""
    wait_for(lambda: text in paths[0].read_text() or process.poll() is not None, seconds,
             repr(text))
    assert process.poll() is None, f'ended with {process.returncode}: {paths[1].read_text()}'


def wait_for(condition, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f'gave up waiting for {what}'
        time.sleep(0.2)


def save_initial_parameters(directory):
    """A fixed start for dist_worker.py (DIR/init.params): how fast its few small steps
    lower the loss depends on the initial draw.  Returns the network."""
    mx.random.seed(0)
    net = small_cnn()
    net.initialize(init.Xavier())
    net(nd.zeros((1, 1, 28, 28)))
    net.save_parameters(os.path.join(directory, 'init.params'))
    return net
