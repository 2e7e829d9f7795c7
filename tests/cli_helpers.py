"""Helpers for the command-line tests: running ``python -m vgg`` and making run directories."""
import os
import subprocess
import sys

from mxnet import gluon

from conftest import REPO
from vgg.model import build_net
from vgg.runs import Run, RunConfig

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
    architecture instead, as a mismatched checkpoint.
    """
    config = RunConfig(**dict(dict(arch='vgg11', ratio=16, resize=32, epochs=3, batch_size=32),
                              **settings))
    run = Run(str(path))
    run.prepare()
    run.start(config, data_dir)
    net = build_net(params_arch or config.arch, config.ratio, config.resize)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': config.lr})
    save = run.saver(net, trainer)
    for epoch in range(1, done + 1):
        save({'epoch': epoch, 'loss': 2.3, 'train_acc': 0.1, 'test_acc': 0.1, 'time': 1.0,
              'images_per_sec': 100.0})
    return run
