"""Data-parallel scaling: one process against 1, 2, ... dist_sync workers, on this machine
or across network namespaces that stand in for machines.

    python benchmarks/scaling.py [--workers 1 2] [--max-samples 2048] [--resize 32]
        [--netns] [--json FILE]

Every case trains the same configuration for ``--epochs`` epochs with the same
global batch, as ``vgg train`` (one process, no kvstore) or as ``vgg launch -n N
-s 1 -- vgg train --kvstore dist_sync`` (N workers and one parameter server),
and reads worker 0's ``metrics.jsonl``.  The rate is the last epoch's (the
first one includes start-up): training images per second of the whole job,
i.e. worker 0's rate on its shard times N, since the workers move in lockstep.
The test pass is not included.

Without ``--netns`` every process runs here over 127.0.0.1.  With it (root, ip
and sshd needed: tests/cluster.py), the jobs run over real ssh on two hosts,
network namespaces joined by veth pairs: the scheduler, the server and worker
0 on the first, worker 1 on the second, so worker 1's gradients and the
weights it pulls cross a real (virtual) link, whose byte counters are read
before and after the job: the bytes per step are measured, not computed (the
whole job's bytes, start-up's parameter broadcast included, over its steps).  Both hosts
still share this machine's cores, and a veth link is memory-speed, so the
step time is this machine's; the bytes per step tell what a real link adds
(bytes x 8 / bits per second).

What to expect: on one machine the workers share its cores, so a job can only
be slower than one process; on 2 cores, no speed-up at all.  Each step also
sends every gradient to the server and back: VGG's two 4096-wide dense layers
are ~17M parameters (~68 MB) whatever ``--ratio``, so small images and batches
are dominated by that traffic.  Several machines, or several GPUs of one
machine (``--ctx gpu:0,1``, no server), are where data parallelism pays.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))  # cluster.py: the namespaces and their sshd


def run_case(workers: int, args: argparse.Namespace, out: str,
             cluster=None) -> Dict[str, float]:
    """Train one case into ``out``; returns its last epoch's statistics (rate of the whole job),
    and over a cluster the bytes the second host sent and received."""
    train = [sys.executable, '-m', 'vgg', 'train', '--resize', str(args.resize),
             '--ratio', str(args.ratio), '--batch-size', str(args.batch_size),
             '--max-samples', str(args.max_samples), '--epochs', str(args.epochs),
             '--seed', '0', '--ctx', 'cpu', '--no-progress', '--out', out]
    if args.data_dir:
        train += ['--data-dir', args.data_dir]
    if workers and cluster is not None:
        # ssh passes no environment on: the workers' thread count goes in their command.
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        command = [sys.executable, '-m', 'vgg', 'launch', '-n', str(workers), '-s', '1',
                   '--hosts', cluster.hosts_file, '--ssh-config', cluster.ssh_config,
                   '--timeout', str(args.timeout), '--', 'env', f'OMP_NUM_THREADS={threads}',
                   *train, '--kvstore', 'dist_sync']
    elif workers:
        command = [sys.executable, '-m', 'vgg', 'launch', '-n', str(workers), '-s', '1',
                   '--timeout', str(args.timeout), '--', *train, '--kvstore', 'dist_sync']
    else:
        command = train
    before = cluster.link_bytes(1) if cluster is not None else None
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            timeout=args.timeout + 60)
    if result.returncode != 0:
        sys.exit(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')
    with open(os.path.join(out, 'metrics.jsonl'), encoding='utf-8') as f:
        last = [json.loads(line) for line in f][-1]
    stats = dict(last, images_per_sec=last['images_per_sec'] * max(workers, 1))
    stats.pop('points', None)
    stats['step_sec'] = args.batch_size / stats['images_per_sec']
    if before is not None and workers > 1:
        # Each worker's shard drops the remainder; its last batch may be a partial one.
        shard, local_batch = args.max_samples // workers, args.batch_size // workers
        steps = args.epochs * math.ceil(shard / local_batch)
        stats['host_2_bytes'] = cluster.link_bytes(1) - before
        stats['host_2_bytes_per_step'] = stats['host_2_bytes'] / steps
    return stats


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                   help='worker counts of the dist_sync jobs (default 1 2)')
    p.add_argument('--resize', type=int, default=32)
    p.add_argument('--ratio', type=float, default=16)
    p.add_argument('--batch-size', type=int, default=64, help='the global batch (default 64)')
    p.add_argument('--max-samples', type=int, default=2048)
    p.add_argument('--epochs', type=int, default=2, help='the last one is measured (default 2)')
    p.add_argument('--data-dir', default=os.environ.get('VGG_DATA_DIR'),
                   help='Fashion-MNIST folder (default $VGG_DATA_DIR, else vgg train\'s search)')
    p.add_argument('--timeout', type=int, default=1800, help='seconds per case (default 1800)')
    p.add_argument('--netns', action='store_true', help='run the jobs over ssh between two '
                   'network namespaces (root; see tests/cluster.py)')
    p.add_argument('--json', metavar='FILE', help='also write the results here')
    args = p.parse_args(argv)

    from vgg.devices import environment
    machine = environment()
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        cluster = None
        if args.netns:
            import cluster as netns
            reason = netns.missing()
            if reason:
                sys.exit(f'--netns: {reason}')
            try:
                cluster = stack.enter_context(netns.Cluster(os.path.join(tmp, 'cluster'), 2))
            except RuntimeError as err:
                sys.exit(f'--netns: {err}')
        for workers in [0] + args.workers:
            where = ('' if not cluster else ' across 2 hosts' if workers > 1 else ' on 1 host')
            name = f'{workers} worker{"s" * (workers > 1)} + 1 server{where}' if workers \
                else '1 process, no kvstore'
            print(f'running: {name} ...', file=sys.stderr, flush=True)
            rows.append((name, run_case(workers, args, os.path.join(tmp, f'run-{workers}'),
                                        cluster if workers else None)))
    base = rows[0][1]['images_per_sec']
    print(f'{machine["cpu"]} ({" ".join(machine["isa"])}), {machine["cores"]} CPU cores; resize '
          f'{args.resize}, ratio {args.ratio:g}, global batch {args.batch_size}, '
          f'{args.max_samples} images; epoch {args.epochs} measured')
    print(f'{"case":<34} {"images/s":>9} {"vs 1 process":>13} {"step s":>7} '
          f'{"MB/step host 2":>15}')
    for name, stats in rows:
        moved = stats.get('host_2_bytes_per_step')
        print(f'{name:<34} {stats["images_per_sec"]:9.1f} '
              f'{stats["images_per_sec"] / base:12.2f}x {stats["step_sec"]:7.3f} '
              f'{"-" if moved is None else f"{moved / 1e6:.1f}":>15}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'machine': machine, 'settings': vars(args),
                       'cases': [dict(stats, case=name) for name, stats in rows]}, f, indent=1)


if __name__ == '__main__':
    main()
