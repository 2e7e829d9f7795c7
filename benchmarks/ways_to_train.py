"""Every way a user trains the chapter's network, timed as whole processes against the chapter.

    python benchmarks/ways_to_train.py [--train-samples 2560] [--test-samples 512]
        [--resize 224] [--epochs 1] [--rounds 2] [--ways chapter vgg-as-gb cli notebook]
        [--json FILE]

The ways, each run as its own process of this Python with OMP_NUM_THREADS
removed from its environment, so that thread settings and import order are
what a user gets:

* chapter   : the chapter's code with gluonbook 0.8.10 -- ``nn.Sequential``
              vgg_block/vgg, ratio 4, Xavier, SGD lr 0.05,
              ``gb.load_data_fashion_mnist(batch_size=128, resize=...)`` (gluon's
              FashionMNIST, per-image Resize + ToTensor in 4 worker processes) and
              ``gb.train``; MXNet's default threads, ``vgg`` never imported;
* vgg-as-gb : the same code with ``import vgg as gb`` in place of gluonbook (no
              explicit hybridize; whatever ``vgg.train`` does with the network);
* cli       : ``python -m vgg train --epochs E --max-samples N --no-progress --seed 0``;
* notebook  : the chapter notebook's training cell (``RunConfig``, ``LiveCurves``,
              ``fit`` with the text progress bar and the live curves) in a Jupyter
              kernel of this Python, run by ``notebooks/execute.py``.

Subset: the first ``--train-samples`` training and ``--test-samples`` test
images of ``$VGG_DATA_DIR`` (default ``../shared/data/fashion-mnist`` next to
the repository) are written as IDX files into a temporary folder, and every
way reads that folder through ``$VGG_DATA_DIR`` (the chapter through
gluonbook's ``root``).  So the two splits can differ in size for every way,
the CLI included, whose ``--max-samples`` (and the ``max_samples`` of the
other vgg ways) is set to the larger of the two and cuts nothing.  The
chapter's only other change: gluon's FashionMNIST reads the folder without
its checksum check (the subset's files cannot match it, so gluon would
download the full set).

Measured: the wall time of each process from start to exit (imports, data,
network, training, test pass, teardown) and the ``time X sec`` of its epoch
lines (gluonbook's epoch time: training and the test pass).  After one
untimed process that reads MXNet into the page cache, ``--rounds`` rounds
run all ways, in reverse order every other round, to spread machine drift;
the table gives medians and speed-ups against ``chapter`` (its seconds
divided by the way's).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:  # the parent never loads MXNet
    import mxnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = ('chapter', 'vgg-as-gb', 'cli', 'notebook')
EPOCH_LINE = re.compile(r'^epoch (\d+), loss (\S+), train acc (\S+), test acc (\S+), '
                        r'time ([\d.]+) sec', re.M)
SPLIT_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
               'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


# --- the ways' code, run in the child processes -------------------------------------

def chapter_net(ratio: int) -> "mxnet.gluon.nn.Sequential":
    """The chapter's VGG-11 as it writes it: ``nn.Sequential`` blocks, channels // ratio."""
    from mxnet.gluon import nn

    def vgg_block(num_convs, num_channels):
        blk = nn.Sequential()
        for _ in range(num_convs):
            blk.add(nn.Conv2D(num_channels, kernel_size=3, padding=1, activation='relu'))
        blk.add(nn.MaxPool2D(pool_size=2, strides=2))
        return blk

    def vgg(conv_arch):
        net = nn.Sequential()
        for (num_convs, num_channels) in conv_arch:
            net.add(vgg_block(num_convs, num_channels))
        net.add(nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
                nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
                nn.Dense(10))
        return net

    conv_arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    return vgg([(pair[0], pair[1] // ratio) for pair in conv_arch])


def run_chapter(args: argparse.Namespace, with_vgg: bool) -> None:
    """Ways ``chapter`` (gluonbook) and ``vgg-as-gb`` (the same code on ``import vgg as gb``)."""
    if with_vgg:
        import vgg as gb
    else:
        import gluonbook as gb
    from mxnet import gluon, init

    net = chapter_net(ratio=4)
    lr, num_epochs, batch_size, ctx = 0.05, args.epochs, 128, gb.try_gpu()
    net.initialize(ctx=ctx, init=init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': lr})
    if with_vgg:
        train_iter, test_iter = gb.load_data_fashion_mnist(
            batch_size, resize=args.resize, max_samples=max(args.train_samples, args.test_samples))
    else:
        from mxnet.gluon.data.vision import datasets
        datasets.download = lambda url, path, **_: os.path.join(path, url.rsplit('/', 1)[-1])
        train_iter, test_iter = gb.load_data_fashion_mnist(
            batch_size=batch_size, resize=args.resize, root=os.environ['VGG_DATA_DIR'])
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    gb.train(train_iter, test_iter, net, loss, trainer, ctx, num_epochs)


NOTEBOOK_CELL = """\
from vgg import LiveCurves, RunConfig, fit, try_gpu
config = RunConfig(arch='vgg11', ratio=4, resize={resize}, epochs={epochs}, batch_size=128,
                   lr=0.05, init='xavier', seed=0, max_samples={max_samples})
curves = LiveCurves('VGG-11 (ratio 4) on Fashion-MNIST')
history = fit(config, out={out!r}, force=True, ctx=try_gpu(),
              on_point=curves.add_point, on_epoch_end=curves.add_epoch)
"""


def run_notebook(args: argparse.Namespace) -> None:
    """Way ``notebook``: the chapter notebook's training cell, run as ``notebooks/execute.py``
    runs a notebook; its printed text goes to this process's stdout."""
    import nbformat

    sys.path.insert(0, REPO)  # a script's folder (benchmarks/) is on sys.path, the checkout not
    from notebooks import execute as runner
    with tempfile.TemporaryDirectory(prefix='vgg-notebook-') as folder, \
            runner.interpreter_kernel() as kernel_name:
        cell = NOTEBOOK_CELL.format(resize=args.resize, epochs=args.epochs,
                                    max_samples=max(args.train_samples, args.test_samples),
                                    out=os.path.join(folder, 'chapter'))
        path = os.path.join(folder, 'training.ipynb')
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
        nb = runner.execute(path, path, kernel_name=kernel_name)
    for output in nb.cells[0].outputs:
        if output.output_type == 'stream':
            sys.stdout.write(output.text)


# --- the parent: subset, machine, timing, table ---------------------------------------

def write_subset(source: str, target: str, counts: Dict[str, int]) -> None:
    """Write the first ``counts[split]`` items of each split's IDX files (gz or raw) as gz."""
    for split, names in SPLIT_FILES.items():
        for name in names:
            path = os.path.join(source, name)
            if os.path.isfile(path + '.gz'):
                with gzip.open(path + '.gz', 'rb') as f:
                    data = f.read()
            else:
                with open(path, 'rb') as f:
                    data = f.read()
            header = 16 if name.endswith('images-idx3-ubyte') else 8
            item = 784 if header == 16 else 1
            count = min(counts[split], int.from_bytes(data[4:8], 'big'))
            with gzip.open(os.path.join(target, name + '.gz'), 'wb', compresslevel=6) as f:
                f.write(data[:4] + count.to_bytes(4, 'big') + data[8:header]
                        + data[header:header + count * item])


def machine(env: Dict[str, str]) -> Dict[str, Any]:
    """CPU model, ISA extensions, cores and versions, as a run directory records them
    (:func:`vgg.devices.environment`, asked in a child so that this process never loads MXNet)."""
    probe = ('import json, vgg.devices; '
             'print(json.dumps(vgg.devices.environment()))')
    info = json.loads(subprocess.run([sys.executable, '-c', probe], env=env, cwd=REPO,
                                     capture_output=True, text=True, check=True).stdout)
    info['versions']['gluonbook'] = version('gluonbook')
    return info


def command(way: str, args: argparse.Namespace) -> List[str]:
    """The child process's command line for ``way``."""
    if way == 'cli':
        return [sys.executable, '-m', 'vgg', 'train', '--epochs', str(args.epochs),
                '--max-samples', str(max(args.train_samples, args.test_samples)),
                '--resize', str(args.resize), '--no-progress', '--seed', '0']
    return [sys.executable, os.path.abspath(__file__), '--one', way, '--epochs', str(args.epochs),
            '--resize', str(args.resize), '--train-samples', str(args.train_samples),
            '--test-samples', str(args.test_samples)]


def time_way(way: str, args: argparse.Namespace, env: Dict[str, str]) -> Dict[str, Any]:
    """Run one way to its exit; its wall time and what its epoch lines say."""
    start = time.perf_counter()
    out = subprocess.run(command(way, args), env=env, cwd=REPO, capture_output=True, text=True,
                         check=False)
    process_s = time.perf_counter() - start
    keys = ('epoch', 'loss', 'train_acc', 'test_acc', 'time')
    epochs = [dict(zip(keys, map(float, line)), epoch=int(line[0]))
              for line in EPOCH_LINE.findall(out.stdout)]
    if out.returncode != 0 or len(epochs) != args.epochs:
        raise RuntimeError(f'{way} failed (exit code {out.returncode}, {len(epochs)} epoch '
                           f'lines):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}')
    epoch_s = sum(e['time'] for e in epochs)
    return {'way': way, 'process_s': process_s, 'epoch_s': epoch_s, 'epochs': epochs,
            'img_per_s': args.train_samples * args.epochs / epoch_s}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark (or, with the hidden ``--one WAY``, one way in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--train-samples', type=int, default=2560)
    parser.add_argument('--test-samples', type=int, default=512)
    parser.add_argument('--resize', type=int, default=224)
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--ways', nargs='+', choices=WAYS, default=list(WAYS))
    parser.add_argument('--json', help='also write the raw results here')
    parser.add_argument('--one', choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one == 'notebook':
        run_notebook(args)
        return 0
    if args.one:
        run_chapter(args, with_vgg=args.one == 'vgg-as-gb')
        return 0

    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    info = machine(env)
    print(f"CPU: {info['cpu']} | ISA: {', '.join(info['isa']) or 'no AVX2'} | "
          f"{info['cores']} cores")
    print(f"OMP_NUM_THREADS in the environment: {os.environ.get('OMP_NUM_THREADS', 'unset')} "
          '(removed for every way) | ' + ', '.join(f'{k} {v}' for k, v in info['versions'].items()))
    print(f'{args.train_samples} training and {args.test_samples} test images at '
          f'{args.resize}x{args.resize}, {args.epochs} epoch(s), {args.rounds} round(s)',
          flush=True)
    source = os.environ.get('VGG_DATA_DIR') or os.path.normpath(
        os.path.join(REPO, '..', 'shared', 'data', 'fashion-mnist'))
    runs = []
    with tempfile.TemporaryDirectory(prefix='vgg-subset-') as subset:
        write_subset(source, subset, {'train': args.train_samples, 'test': args.test_samples})
        env['VGG_DATA_DIR'] = subset
        subprocess.run([sys.executable, '-c', 'import gluonbook, vgg'], env=env, cwd=REPO,
                       capture_output=True, check=True)  # untimed: MXNet into the page cache
        for round_ in range(args.rounds):
            for way in args.ways if round_ % 2 == 0 else args.ways[::-1]:
                try:  # a failing way is reported and left out; the others still run
                    run = dict(time_way(way, args, env), round=round_ + 1)
                except RuntimeError as err:
                    runs.append({'way': way, 'round': round_ + 1, 'error': str(err)})
                    print(f'  round {round_ + 1} {err}', file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                print(f"  round {run['round']} {way:<10} process {run['process_s']:7.1f} s, "
                      f"epoch {run['epoch_s']:7.1f} s", file=sys.stderr, flush=True)

    summary = {}
    for way in args.ways:
        mine = [r for r in runs if r['way'] == way and 'error' not in r]
        if not mine:
            continue
        summary[way] = {key: statistics.median(r[key] for r in mine)
                        for key in ('process_s', 'epoch_s')}
        summary[way]['img_per_s'] = args.train_samples * args.epochs / summary[way]['epoch_s']
    header = (f"{'way':<10} {'process s':>9} {'epoch s':>8} {'train img/s':>11} "
              f"{'x chapter (process)':>19} {'x chapter (epoch)':>17}")
    print(header)
    print('-' * len(header))
    base = summary.get('chapter')
    for way, s in summary.items():
        for key in ('process', 'epoch'):
            s[f'x_chapter_{key}'] = base[f'{key}_s'] / s[f'{key}_s'] if base else None
        ratios = [f'{r:.2f}' if r else '-' for r in (s['x_chapter_process'], s['x_chapter_epoch'])]
        print(f"{way:<10} {s['process_s']:>9.1f} {s['epoch_s']:>8.1f} {s['img_per_s']:>11.1f} "
              f"{ratios[0]:>19} {ratios[1]:>17}")
    print('medians over the rounds; train img/s = training images / median epoch seconds '
          "(which include the test pass); x chapter = chapter's seconds / the way's")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': info, 'settings': vars(args), 'runs': runs,
                       'summary': summary}, f, indent=2)
    return 1 if any('error' in r for r in runs) else 0


if __name__ == '__main__':
    sys.exit(main())
