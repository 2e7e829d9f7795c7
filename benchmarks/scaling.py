"""Data-parallel scaling on this machine: one process against 1, 2, ... dist_sync workers.

    python benchmarks/scaling.py [--workers 1 2] [--max-samples 2048] [--resize 32]

Every case trains the same configuration for ``--epochs`` epochs with the same
global batch, as ``vgg train`` (one process, no kvstore) or as ``vgg launch -n N
-s 1 -- vgg train --kvstore dist_sync`` (N workers and one parameter server over
127.0.0.1), and reads worker 0's ``metrics.jsonl``.  The rate is the last
epoch's (the first one includes start-up): training images per second of the
whole job, i.e. worker 0's rate on its shard times N, since the workers move in
lockstep.  The test pass is not included.

What to expect: on one machine the workers share its cores, so a job can only
be slower than one process; on 2 cores, no speed-up at all.  Each step also
sends every gradient to the server and back: VGG's two 4096-wide dense layers
are ~17M parameters (~68 MB) whatever ``--ratio``, so small images and batches
are dominated by that traffic.  Several machines (``--hosts``), or several GPUs
of one machine (``--ctx gpu:0,1``, no server), are where data parallelism pays.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_case(workers: int, args: argparse.Namespace, out: str) -> Dict[str, float]:
    """Train one case into ``out``; returns its last epoch's statistics (rate of the whole job)."""
    train = [sys.executable, '-m', 'vgg', 'train', '--resize', str(args.resize),
             '--ratio', str(args.ratio), '--batch-size', str(args.batch_size),
             '--max-samples', str(args.max_samples), '--epochs', str(args.epochs),
             '--seed', '0', '--ctx', 'cpu', '--no-progress', '--out', out]
    if args.data_dir:
        train += ['--data-dir', args.data_dir]
    if workers:
        command = [sys.executable, '-m', 'vgg', 'launch', '-n', str(workers), '-s', '1',
                   '--timeout', str(args.timeout), '--', *train, '--kvstore', 'dist_sync']
    else:
        command = train
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            timeout=args.timeout + 60)
    if result.returncode != 0:
        sys.exit(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')
    with open(os.path.join(out, 'metrics.jsonl'), encoding='utf-8') as f:
        last = [json.loads(line) for line in f][-1]
    return dict(last, images_per_sec=last['images_per_sec'] * max(workers, 1))


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                   help='worker counts of the dist_sync jobs (default 1 2)')
    p.add_argument('--resize', type=int, default=32)
    p.add_argument('--ratio', type=float, default=16)
    p.add_argument('--batch-size', type=int, default=64, help='the global batch (default 64)')
    p.add_argument('--max-samples', type=int, default=2048)
    p.add_argument('--epochs', type=int, default=2, help='the last one is measured (default 2)')
    p.add_argument('--data-dir', help='Fashion-MNIST folder (default: vgg train\'s search)')
    p.add_argument('--timeout', type=int, default=1800, help='seconds per case (default 1800)')
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in [0] + args.workers:
            name = f'{workers} worker{"s" * (workers > 1)} + 1 server' if workers \
                else '1 process, no kvstore'
            print(f'running: {name} ...', file=sys.stderr, flush=True)
            rows.append((name, run_case(workers, args, os.path.join(tmp, f'run-{workers}'))))
    base = rows[0][1]['images_per_sec']
    print(f'{os.cpu_count()} CPU cores; resize {args.resize}, ratio {args.ratio:g}, global batch '
          f'{args.batch_size}, {args.max_samples} images; epoch {args.epochs} measured')
    print(f'{"case":<24} {"images/s":>9} {"vs 1 process":>13} {"epoch s":>8}')
    for name, stats in rows:
        print(f'{name:<24} {stats["images_per_sec"]:9.1f} '
              f'{stats["images_per_sec"] / base:12.2f}x {stats["time"]:8.1f}')


if __name__ == '__main__':
    main()
