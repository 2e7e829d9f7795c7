"""Training throughput: the chapter's pipeline against this package's, side by side.

    python benchmarks/train_throughput.py [--sizes 224 96] [--json out.json]

Every case runs in its own subprocess (so each gets a fresh MXNet and its own
peak-memory figure) on the real Fashion-MNIST:

* chapter     : what a reader of the book runs -- gluon's DataLoader with the
                chapter's per-image Resize + ToTensor in 4 worker processes,
                the un-hybridized network, gluonbook 0.8.10's ``train`` step,
                MXNet's default OpenMP threads (OMP_NUM_THREADS unset);
* chapter+omp : the same with OMP_NUM_THREADS set to the number of cores, to
                show how much of the gain is the thread setting alone;
* vgg         : this package's default path (``vgg.load_data_fashion_mnist`` +
                ``vgg.train`` on the hybridized network), as ``python -m vgg`` runs it;
* probe       : float32 matrix multiplies, for the machine's attainable FLOP/s.

Rates are steady state: the first ``--warmup`` batches are excluded, data
loading is included.  Ratios compare figures measured in this one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class TimedBatches:
    """Yield ``warmup + count`` batches of ``source``, noting when batch ``warmup`` is asked for."""

    def __init__(self, source, warmup: int, count: int):
        self.source, self.warmup, self.count = source, warmup, count
        self.start = None

    def __iter__(self):
        for i, batch in enumerate(self.source):
            if i == self.warmup:
                self.start = time.perf_counter()
            if i == self.warmup + self.count:
                return
            yield batch


class EndMarker:
    """A one-batch test set whose first request marks the end of the training part."""

    def __init__(self, batch):
        self.batch, self.end = batch, None

    def __iter__(self):
        self.end = time.perf_counter()
        yield self.batch


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def run_case(case: str, size: int, batch_size: int, warmup: int, batches: int,
             data_dir: str) -> dict:
    """Measure one pipeline in this process; return its figures."""
    if case == 'chapter':
        import mxnet as mx  # before vgg: keep MXNet's default thread count, as a reader has it
    import vgg  # before MXNet, unless the chapter's case imported it above
    # isort: split
    import mxnet as mx
    from chapter_pipeline import quiet_stdout
    from mxnet import gluon, init

    from vgg.data import load_arrays
    from vgg.summaries import summary

    arrays = load_arrays(data_dir, download=False)
    conv_arch = vgg.narrow(vgg.VGG11, 4)
    flop_per_image = 3 * 2 * summary(vgg.vgg(conv_arch, 10), (1, 1, size, size)).total_macs
    mx.random.seed(0)
    net = vgg.vgg(conv_arch, 10)
    net.initialize(init.Xavier())
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.05})
    if case.startswith('chapter'):
        import gluonbook as gb
        from chapter_pipeline import chapter_loader

        train_iter, test_iter = (chapter_loader(*arrays[split], size, batch_size, shuffle,
                                                num_workers=4)
                                 for split, shuffle in (('train', True), ('test', False)))
        train_fn, evaluate = gb.train, gb.evaluate_accuracy
    else:
        train_iter, test_iter = vgg.load_data_fashion_mnist(batch_size, resize=size,
                                                            root=data_dir, seed=0)
        net.hybridize(static_alloc=True, static_shape=True)
        train_fn, evaluate = vgg.train, vgg.evaluate_accuracy

    timed = TimedBatches(train_iter, warmup, batches)
    marker = EndMarker(next(iter(test_iter)))
    kwargs = {} if case.startswith('chapter') else {'progress': False}
    with quiet_stdout():
        train_fn(timed, marker, net, loss, trainer, mx.cpu(), 1, **kwargs)
    train_rate = batches * batch_size / (marker.end - timed.start)

    eval_batches = TimedBatches(test_iter, 1, max(2, batches // 2))
    evaluate(eval_batches, net, mx.cpu())
    eval_rate = eval_batches.count * batch_size / (time.perf_counter() - eval_batches.start)
    return {'case': case, 'size': size, 'train_img_per_s': train_rate,
            'eval_img_per_s': eval_rate, 'gflop_per_image': flop_per_image / 1e9,
            'train_gflop_per_s': train_rate * flop_per_image / 1e9,
            'peak_rss_mb': _peak_rss_mb(), 'omp_num_threads': os.environ.get('OMP_NUM_THREADS')}


def run_probe(n: int = 2048, repeat: int = 10) -> dict:
    """float32 GEMM FLOP/s through MXNet's two paths (OpenBLAS dot, oneDNN FullyConnected)."""
    import vgg  # noqa: F401  (thread setting, before MXNet)
    # isort: split
    from mxnet import nd
    a, b = nd.random.uniform(shape=(n, n)), nd.random.uniform(shape=(n, n))
    rates = {}
    for name, op in (('dot', lambda: nd.dot(a, b)),
                     ('fully_connected', lambda: nd.FullyConnected(a, b, num_hidden=n,
                                                                   no_bias=True))):
        op().wait_to_read()
        start = time.perf_counter()
        for _ in range(repeat):
            out = op()
        out.wait_to_read()
        rates[name] = 2 * n ** 3 * repeat / (time.perf_counter() - start) / 1e9
    return {'case': 'probe', 'gemm_gflop_per_s': max(rates.values()), **{
        f'{k}_gflop_per_s': v for k, v in rates.items()}}


def _subprocess(args, env) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f'case {args} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 96])
    parser.add_argument('--cases', nargs='+', default=['chapter', 'chapter+omp', 'vgg'])
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--warmup', type=int, default=2, help='batches left out of the rate')
    parser.add_argument('--batches', type=int, default=8, help='timed batches per case')
    parser.add_argument('--data-dir', default=os.environ.get('VGG_DATA_DIR'))
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--one', nargs=2, metavar=('CASE', 'SIZE'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        case, size = args.one
        result = run_probe() if case == 'probe' else run_case(
            case, int(size), args.batch_size, args.warmup, args.batches, args.data_dir)
        print(json.dumps(result))
        return 0

    base_env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    cores_env = dict(base_env, OMP_NUM_THREADS=str(os.cpu_count()))
    common = ['--batch-size', str(args.batch_size), '--warmup', str(args.warmup),
              '--batches', str(args.batches)]
    common += ['--data-dir', args.data_dir] if args.data_dir else []
    probe = _subprocess(['--one', 'probe', '0'], base_env)
    results = []
    for size in args.sizes:
        for case in args.cases:
            env = base_env if case == 'chapter' else cores_env
            result = _subprocess(['--one', case, str(size), *common], env)
            results.append(result)
            print(f"  measured {case} at {size}: {result['train_img_per_s']:.1f} img/s",
                  file=sys.stderr, flush=True)

    print(f"float32 GEMM probe: {probe['gemm_gflop_per_s']:.0f} GFLOP/s "
          f"(OpenBLAS dot {probe['dot_gflop_per_s']:.0f}, oneDNN FullyConnected "
          f"{probe['fully_connected_gflop_per_s']:.0f}); {os.cpu_count()} cores")
    header = (f"{'size':>4} {'case':<12} {'train img/s':>11} {'x chapter':>9} {'GFLOP/s':>8} "
              f"{'% probe':>7} {'eval img/s':>10} {'peak RSS MB':>11}")
    print(header)
    print('-' * len(header))
    for r in results:
        chapter = next(c for c in results if c['size'] == r['size'] and c['case'] == 'chapter') \
            if 'chapter' in args.cases else r
        r['ratio_to_chapter'] = r['train_img_per_s'] / chapter['train_img_per_s']
        r['fraction_of_probe'] = r['train_gflop_per_s'] / probe['gemm_gflop_per_s']
        print(f"{r['size']:>4} {r['case']:<12} {r['train_img_per_s']:>11.1f} "
              f"{r['ratio_to_chapter']:>9.2f} {r['train_gflop_per_s']:>8.1f} "
              f"{100 * r['fraction_of_probe']:>6.0f}% {r['eval_img_per_s']:>10.1f} "
              f"{r['peak_rss_mb']:>11.0f}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'probe': probe, 'results': results, 'cores': os.cpu_count()}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
