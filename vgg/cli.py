"""Command line: ``vgg train`` (the default) runs the chapter's training.

Every expected failure (bad flag values, missing data, corrupt files) is one
line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import random
import sys
from typing import List, Optional

import mxnet as mx
import numpy as np
from mxnet import gluon, init

from .data import DataError, load_data_fashion_mnist
from .devices import parse_ctx
from .model import CONV_ARCHS, conv_arch_by_name, min_input_size, narrow, vgg
from .training import train

COMMANDS = ('train',)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f'must be positive, got {text}')
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit code 2."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message}\n')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='vgg', description='The VGG chapter of the Gluon book, from the command line.')
    sub = parser.add_subparsers(dest='command', parser_class=_Parser)
    p = sub.add_parser('train', help="train a VGG network on Fashion-MNIST (the chapter's settings by default)")
    p.add_argument('--arch', default='vgg11', choices=sorted(CONV_ARCHS), help='configuration of the paper (default vgg11)')
    p.add_argument('--ratio', type=_positive(float), default=4, help='divide every channel count by this (default 4)')
    p.add_argument('--resize', type=_positive(int), default=224, help='image height and width (default 224)')
    p.add_argument('--epochs', type=_positive(int), default=3, help='epochs (default 3)')
    p.add_argument('--batch-size', type=_positive(int), default=128, help='batch size (default 128)')
    p.add_argument('--lr', type=_positive(float), default=0.05, help='SGD learning rate (default 0.05)')
    p.add_argument('--ctx', default='auto', help='auto, cpu, gpu, gpu:0,1 or cpu:0,1 (default auto)')
    p.add_argument('--data-dir', default=None, help='folder with the Fashion-MNIST files')
    p.add_argument('--max-samples', type=_positive(int), default=None, help='use only the first N images of each split')
    p.add_argument('--seed', type=int, default=None, help='seed MXNet, numpy and Python')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def seed_everything(seed: int) -> None:
    """Seed MXNet, numpy and Python's random module."""
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def cmd_train(args: argparse.Namespace) -> int:
    conv_arch = narrow(conv_arch_by_name(args.arch), args.ratio)
    if args.resize < min_input_size(conv_arch):
        raise ValueError(f'--resize {args.resize} is too small: {len(conv_arch)} pooling blocks '
                         f'need at least {min_input_size(conv_arch)} pixels')
    ctx = parse_ctx(args.ctx)
    if args.seed is not None:
        seed_everything(args.seed)
    train_iter, test_iter = load_data_fashion_mnist(
        args.batch_size, resize=args.resize, root=args.data_dir, ctx=ctx[0],
        max_samples=args.max_samples, seed=args.seed)
    net = vgg(conv_arch, 10)
    net.initialize(init.Xavier(), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': args.lr})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    train(train_iter, test_iter, net, loss, trainer, ctx[0] if len(ctx) == 1 else ctx,
          args.epochs, progress=not args.no_progress)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ('-h', '--help'):
        argv.insert(0, 'train')
    args = build_parser().parse_args(argv)
    try:
        return cmd_train(args)
    except (ValueError, FloatingPointError) as err:  # DataError is a ValueError
        print(f'vgg: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('vgg: interrupted', file=sys.stderr)
        return 130
