"""Command line: ``vgg train`` (the default), ``summary``, ``evaluate``, ``predict``, ``export``,
``launch``.

Every expected failure (bad flag values, missing data, corrupt files or
checkpoints, a diverging loss, memory running out) is one line on stderr and
exit code 2; Ctrl-C is exit code 130.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from typing import Any, Dict, List, Optional

import matplotlib
import mxnet as mx
import numpy as np

from .base import NUM_CLASSES, allocation_failure, check_positive
from .config import SCHEDULES, RunConfig
from .data import TEXT_LABELS, load_data_fashion_mnist
from .devices import parse_ctx
from .distributed import KVSTORES
from .experiment import Interrupted, OutOfMemory, fit, load_net, load_net_epoch
from .export import export_onnx, export_symbol
from .launcher import launch, read_hosts
from .model import ARCH_NAMES, CHANNELS, INITS, build_net
from .plots import LiveCurves, plot_confusion, save_figure
from .predict import (
    confusion_matrix,
    per_class_accuracy,
    predict_probabilities,
    read_image,
    top_classes,
)
from .runs import CONFUSION, EXPORT, Run
from .summaries import summary

DEFAULTS = RunConfig()
# What to lower when a command other than train runs out of memory.
MEMORY_HINTS = {'evaluate': 'lower --batch-size', 'predict': 'give fewer images at a time'}
INVERT_HELP = ('Fashion-MNIST shows a light object on a black background, and images are '
               'used as they are: pass --invert for a dark object on a light background '
               '(most photos)')


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
        try:
            return check_positive('value', value, kind)
        except ValueError as err:  # "value must be positive, got -1" -> "must be positive, ..."
            raise argparse.ArgumentTypeError(str(err)[len('value '):]) from None
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit code 2."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message}\n')


def _add_net_flags(p: argparse.ArgumentParser, defaults: Optional[RunConfig]) -> None:
    """--arch, --ratio, --resize; ``defaults`` None leaves them None when not given."""
    def default(name: str):
        return None if defaults is None else getattr(defaults, name)
    p.add_argument('--arch', default=default('arch'), choices=ARCH_NAMES,
                   help=f'configuration of the paper (default {DEFAULTS.arch})')
    p.add_argument('--ratio', type=_positive(float), default=default('ratio'),
                   help=f'divide every channel count by this (default {DEFAULTS.ratio})')
    p.add_argument('--resize', type=_positive(int), default=default('resize'),
                   help=f'image height and width (default {DEFAULTS.resize})')


def _add_ctx_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ctx', default='auto',
                   help='auto, cpu, gpu, gpu:0,1 or cpu:0,1 (default auto)')


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument('run_dir', metavar='RUN_DIR', help='a run directory (vgg train --out RUN_DIR)')


def _add_command(sub, name: str, text: str, details: str = '') -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=f'{text[0].upper()}{text[1:]}. {details}')


def _add_train_parser(sub) -> None:
    p = _add_command(sub, 'train', "train a VGG network on Fashion-MNIST (the chapter's settings "
                     'by default)', "Prints the chapter's epoch lines. With --out, everything is "
                     'saved after every epoch, and --resume continues from the last complete one.')
    # Settings default to None here, so that --resume can tell which ones were given.
    _add_net_flags(p, None)
    p.add_argument('--epochs', type=_positive(int),
                   help='epochs in all; with --resume, more than the run has extends it '
                   f'(default {DEFAULTS.epochs})')
    p.add_argument('--batch-size', type=_positive(int),
                   help=f'batch size (default {DEFAULTS.batch_size})')
    p.add_argument('--lr', type=_positive(float),
                   help=f'SGD learning rate (default {DEFAULTS.lr})')
    p.add_argument('--momentum', type=float, help='SGD momentum (default none, as the chapter)')
    p.add_argument('--wd', type=float, help='weight decay (default none, as the chapter)')
    p.add_argument('--lr-schedule', choices=SCHEDULES, help='constant (the chapter\'s), step '
                   '(x0.1 at 1/2 and 3/4 of the run) or cosine (to 0 at the end) '
                   f'(default {DEFAULTS.lr_schedule})')
    p.add_argument('--warmup-epochs', type=float, metavar='E',
                   help='raise the learning rate linearly from 0 over the first E epochs')
    p.add_argument('--init', choices=tuple(INITS), help="initialisation: xavier (the "
                   "chapter's) or msra (He et al.'s, for ReLU networks) (default xavier)")
    start = p.add_mutually_exclusive_group()
    start.add_argument('--init-from', metavar='RUN_DIR', help='start from a trained shallower '
                       'run, as the paper trains its deeper nets: its first four convolutions '
                       'and last three dense layers, where the shapes match')
    start.add_argument('--from-model-zoo', dest='model_zoo', metavar='NAME', choices=ARCH_NAMES,
                       help="start from the weights of MXNet's model zoo network NAME "
                       '(vgg11 ... vgg19_bn; --arch and --ratio then default to NAME and 1; '
                       'the RGB first convolution is folded to grey, the output layer is new)')
    p.add_argument('--params', dest='model_zoo_params', metavar='FILE',
                   help="the model zoo's parameter file (default MXNet's model store)")
    p.add_argument('--seed', type=int, help='seed MXNet, numpy, Python and the shuffling')
    p.add_argument('--max-samples', type=_positive(int),
                   help='use only the first N images of each split')
    _add_ctx_flag(p)
    p.add_argument('--kvstore', default='device', choices=KVSTORES,
                   help='how gradients are summed: over the devices of --ctx (device, local), '
                   'or over the workers of a job started by "vgg launch" as well '
                   '(dist_sync, dist_device_sync; --batch-size is then the global batch, '
                   'shared equally by the workers) (default device)')
    p.add_argument('--data-dir', help='folder with the Fashion-MNIST files')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--curves', action='store_true', help='print the learning curves as text '
                   'while training: loss, training accuracy and learning rate at about 20 '
                   'points of every epoch')
    p.add_argument('--out', metavar='DIR', help='run directory: configuration, metrics, '
                   'learning curves and a checkpoint after every epoch')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--resume', action='store_true', help='continue the run in --out from '
                      'its last complete epoch, with its saved configuration')
    mode.add_argument('--force', action='store_true', help='replace the run that --out holds')


def _add_launch_parser(sub) -> None:
    p = _add_command(sub, 'launch', "run a command as the workers of a distributed job, with "
                     "MXNet's scheduler and parameter servers", 'Example: vgg launch -n 2 -s 1 -- '
                     'vgg train --kvstore dist_sync --out runs/dist. Everything runs on this '
                     'machine over 127.0.0.1 unless --hosts is given. When a process fails or '
                     'the timeout passes, all are stopped and the failing one\'s last lines are '
                     'shown; the exit code is then the failing process\'s (128 + N for signal N) '
                     'or 124 for the timeout.')
    p.add_argument('-n', '--num-workers', type=_positive(int), required=True,
                   help='workers, each running COMMAND')
    p.add_argument('-s', '--num-servers', type=_positive(int), default=1,
                   help='parameter servers (default 1)')
    p.add_argument('--hosts', metavar='FILE', help='IP addresses, one a line, to start the '
                   'processes on through ssh: the scheduler on the first, servers and workers '
                   'round-robin (every host needs this Python environment and folder)')
    p.add_argument('--ssh-config', metavar='FILE', help='ssh configuration for reaching the '
                   'hosts (ssh -F FILE: key, user, known hosts; default ~/.ssh/config)')
    p.add_argument('--port', type=_positive(int), help='the scheduler\'s port (default a free '
                   'one here; 9091 with --hosts)')
    p.add_argument('--timeout', type=_positive(float), metavar='SEC',
                   help='stop the whole job after SEC seconds (default none)')
    p.add_argument('worker_command', nargs=argparse.REMAINDER, metavar='-- COMMAND ...',
                   help='what every worker runs, e.g. vgg train --kvstore dist_sync ...')


def build_parser() -> argparse.ArgumentParser:
    """The ``vgg`` argument parser with its six commands."""
    parser = _Parser(prog='vgg', description='The VGG chapter of the Gluon book, from the '
                     'command line. Without a command, the flags are those of "vgg train".')
    sub = parser.add_subparsers(dest='command', parser_class=_Parser)
    _add_train_parser(sub)

    p = _add_command(sub, 'summary', 'per-layer table of a configuration and its totals')
    _add_net_flags(p, DEFAULTS)
    p.add_argument('--num-outputs', type=_positive(int), default=NUM_CLASSES,
                   help=f'classes (default {NUM_CLASSES})')
    p.add_argument('--channels', type=_positive(int), default=CHANNELS,
                   help=f'input channels (default {CHANNELS})')

    p = _add_command(sub, 'evaluate', 'test accuracy, per-class accuracy and a confusion matrix '
                     'of a trained run', f'The matrix is drawn into RUN_DIR/{CONFUSION}.')
    _add_run_dir(p)
    p.add_argument('--data-dir', help="folder with the Fashion-MNIST files (default the run's)")
    p.add_argument('--max-samples', type=_positive(int),
                   help="use the first N test images (default the run's setting)")
    p.add_argument('--batch-size', type=_positive(int), default=256,
                   help='batch size (default 256)')
    _add_ctx_flag(p)

    p = _add_command(sub, 'predict', 'class names and probabilities for image files',
                     'PNG, JPEG, ...: any size, colour or grey. Each image is turned upright as '
                     'its EXIF orientation says (as photo viewers show it), grey, padded '
                     'to a square, resized to 28x28 like Fashion-MNIST, then resized like the '
                     f"run's training images. {INVERT_HELP}.")
    _add_run_dir(p)
    p.add_argument('images', metavar='IMAGE', nargs='+', help='image files')
    p.add_argument('--invert', action='store_true', help=INVERT_HELP)
    p.add_argument('--top', type=_positive(int), default=3,
                   help='classes shown per image (default 3)')
    _add_ctx_flag(p)

    p = _add_command(sub, 'export', 'write the trained network as MXNet symbol + parameters and '
                     'as ONNX', f'Into RUN_DIR/{EXPORT}; each export is loaded back and must give '
                     "the network's logits. ONNX needs onnx 1.18 (MXNet 1.9.1's exporter) and "
                     'onnxruntime.')
    _add_run_dir(p)
    p.add_argument('--no-onnx', action='store_true', help='only the MXNet symbol and parameters')
    _add_launch_parser(sub)
    return parser


def _given(args: argparse.Namespace) -> Dict[str, Any]:
    return {name: getattr(args, name) for name in RunConfig.__dataclass_fields__
            if getattr(args, name) is not None}


def _resume_command(run_dir: str, args: argparse.Namespace) -> str:
    prog = ['vgg'] if os.path.basename(sys.argv[0]) == 'vgg' else [sys.executable, '-m', 'vgg']
    ctx = [] if args.ctx == 'auto' else ['--ctx', args.ctx]
    return shlex.join(prog + ['train', '--resume', '--out', run_dir] + ctx)


def cmd_train(args: argparse.Namespace) -> int:
    """``vgg train``: :func:`vgg.fit` with the flags; returns the exit code."""
    if args.resume and not args.out:
        raise ValueError('--resume needs --out DIR, the run directory to continue')
    try:
        fit(_given(args), args.out, resume=args.resume, force=args.force,
            ctx=None if args.ctx == 'auto' else args.ctx, data_dir=args.data_dir,
            kvstore=args.kvstore, progress=not args.no_progress,
            on_point=LiveCurves().add_point if args.curves else None)
    except Interrupted as stop:
        message = stop.message()
        if stop.run is not None and stop.run.exists():
            message += f'; resume with: {_resume_command(stop.run.path, args)}'
        # Ctrl-C can land while the progress bar is mid-line: start the message on a new one.
        print(f'\nvgg: interrupted; {message}', file=sys.stderr)
        return 130
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """``vgg summary``: print the per-layer table of a configuration."""
    net = build_net(args.arch, args.ratio, args.resize, args.num_outputs, channels=args.channels)
    print(summary(net, (1, args.channels, args.resize, args.resize)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``vgg evaluate``: accuracy, per-class accuracy and the confusion-matrix PNG of a run."""
    run = Run(args.run_dir)
    config = run.config()
    ctx = parse_ctx(args.ctx)[0]
    net, epoch = load_net_epoch(run.path, ctx)
    _, test_iter = load_data_fashion_mnist(
        args.batch_size, resize=config.resize, root=args.data_dir or run.data_dir(), ctx=ctx,
        max_samples=args.max_samples or config.max_samples)
    matrix = confusion_matrix(net, test_iter, ctx)
    per_class = per_class_accuracy(matrix)
    print(f'test accuracy {matrix.trace() / matrix.sum():.3f} ({matrix.sum()} images, '
          f'after epoch {epoch} of {run.path})')
    width = max(len(name) for name in TEXT_LABELS)
    print(f'{"class":<{width}}  accuracy  images')
    for name, accuracy, count in zip(TEXT_LABELS, per_class, matrix.sum(axis=1)):
        print(f'{name:<{width}}  {accuracy:8.3f}  {count:6d}')
    path = run.file(CONFUSION)
    title = f'{os.path.basename(run.path)}: confusion matrix'
    save_figure(plot_confusion(matrix, title=title), path)
    print(f'confusion matrix: {path}')
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``vgg predict``: the most probable classes of image files."""
    images = np.stack([read_image(path, args.invert) for path in args.images])
    run = Run(args.run_dir)
    ctx = parse_ctx(args.ctx)[0]
    probabilities = predict_probabilities(load_net(run.path, ctx), images, run.config().resize,
                                          ctx)
    for path, p in zip(args.images, probabilities):
        top = top_classes(p, args.top)
        print(f'{path}: ' + ', '.join(f'{name} {probability:.3f}' for name, probability in top))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``vgg export``: symbol + parameters and ONNX, each checked against the network."""
    run = Run(args.run_dir)
    resize = run.config().resize
    net = load_net(run.path, mx.cpu())
    directory = run.folder(EXPORT)
    symbol = export_symbol(net, resize, directory)
    print(f"symbol: {symbol['symbol']} {symbol['params']} (reloaded with SymbolBlock.imports: "
          f"max logit difference {symbol['max_difference']:.2g})")
    if not args.no_onnx:
        onnx = export_onnx(symbol['symbol'], symbol['params'], net, resize,
                           os.path.join(directory, 'vgg.onnx'))
        print(f"onnx: {onnx['onnx']} (opset {onnx['opset']}, onnx {onnx['onnx_version']}; "
              f"onnxruntime {onnx['onnxruntime_version']}: max logit difference "
              f"{onnx['max_difference']:.2g})")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    """``vgg launch``: run a distributed job; returns 0 or the failing process's exit code."""
    command = args.worker_command
    if command[:1] == ['--']:
        command = command[1:]
    hosts = read_hosts(args.hosts) if args.hosts else None
    if args.ssh_config and not hosts:
        raise ValueError('--ssh-config is for --hosts: without it every process runs here')
    if args.ssh_config and not os.path.isfile(args.ssh_config):
        raise ValueError(f'ssh configuration {args.ssh_config} does not exist')
    return launch(command, args.num_workers, args.num_servers, hosts=hosts, port=args.port,
                  timeout=args.timeout, ssh_config=args.ssh_config)


COMMANDS = {'train': cmd_train, 'summary': cmd_summary, 'evaluate': cmd_evaluate,
            'predict': cmd_predict, 'export': cmd_export, 'launch': cmd_launch}


def _flag(name: str) -> str:
    return '--' + name.replace('_', '-')


def _out_of_memory(command: str, err: BaseException) -> str:
    """The one line for a failed allocation in ``command``."""
    if isinstance(err, OutOfMemory):
        return err.message(_flag)
    hint = MEMORY_HINTS.get(command, 'free memory, or run it where there is more')
    return f'out of memory ({allocation_failure(err)}); {hint}'


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (0, 2 for a bad input, 130 for Ctrl-C).

    When memory runs out the process ends at once, with exit code 2, after its one
    line: MXNet's engine keeps the failure, raises it again while Python shuts
    down, and its other threads may still crash on their own failed allocations.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and not argv[0].startswith('-') and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        parser.error(f"unknown command '{argv[0]}'{hint}; the commands are "
                     f"{', '.join(COMMANDS)}")
    if not argv or argv[0] not in tuple(COMMANDS) + ('-h', '--help'):
        argv.insert(0, 'train')
    args = parser.parse_args(argv)
    matplotlib.use('Agg')  # figures go to files only, also on machines without a display
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FloatingPointError, OSError) as err:  # DataError is a ValueError
        print('vgg: error: ' + ' '.join(str(err).split()), file=sys.stderr)
        return 2
    except (MemoryError, mx.base.MXNetError) as err:
        if allocation_failure(err) is None:
            raise
        print('vgg: error: ' + ' '.join(_out_of_memory(args.command, err).split()),
              file=sys.stderr)
        # End here: MXNet's engine may still be running (and failing) queued operations.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    except KeyboardInterrupt:
        print('vgg: interrupted', file=sys.stderr)
        return 130
