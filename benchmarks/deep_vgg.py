"""Which remedy makes a narrowed VGG-16 learn: measured from the same seed, side by side.

    python benchmarks/deep_vgg.py [--resize 96] [--epochs 2] [--max-samples 6000]
        [--variants plain bn msra staged momentum] [--json FILE]

Every variant is ``vgg.fit`` of ratio-4 VGG-16 at ``--resize`` with the
chapter's settings (batch 128, SGD lr 0.05, Xavier, seed 0), changing one thing:

* plain     : nothing (the chapter's recipe on the deeper net);
* bn        : batch norm after every convolution (``vgg16_bn``);
* msra      : He et al.'s initialisation (``init='msra'``);
* staged    : started from a ratio-4 VGG-11 trained first with the same
              settings (``init_from``; its training time is reported too), as
              the paper trains its deeper configurations;
* momentum  : SGD momentum 0.9 with one epoch of linear warm-up.

Printed per variant: the loss and test accuracy after every epoch and the
seconds per epoch (test pass included), with the CPU model and ISA.  The
first ``--max-samples`` images of each split are used (a subset keeps the
whole comparison near half an hour on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import vgg  # before MXNet: sets OMP_NUM_THREADS
from vgg.devices import as_contexts, environment

VARIANTS = {
    'plain': {},
    'bn': {'arch': 'vgg16_bn'},
    'msra': {'init': 'msra'},
    'staged': {},  # init_from is filled in with the trained VGG-11
    'momentum': {'momentum': 0.9, 'warmup_epochs': 1},
}


def run(settings: Dict[str, Any], out: str) -> Dict[str, Any]:
    """Train one variant; its history (epoch, loss, test_acc, time) and wall seconds."""
    start = time.time()
    history = vgg.fit(settings, out, progress=False)
    return {'settings': settings, 'seconds': time.time() - start,
            'epochs': [{k: h[k] for k in ('epoch', 'loss', 'train_acc', 'test_acc', 'time')}
                       for h in history]}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--resize', type=int, default=96)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--max-samples', type=int, default=6000)
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args(argv)
    machine = environment(as_contexts(None, default='auto'))
    print(f"CPU: {machine['cpu']} | ISA: {', '.join(machine['isa']) or 'no AVX2'} | "
          f"{machine['cores']} cores | devices {machine['ctx']}")
    base = {'arch': 'vgg16', 'ratio': 4, 'resize': args.resize, 'epochs': args.epochs,
            'max_samples': args.max_samples, 'seed': 0}
    print(f'ratio-4 VGG-16 at {args.resize}, {args.epochs} epochs on the first '
          f'{args.max_samples} images of each split, batch 128, lr 0.05, seed 0', flush=True)
    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix='vgg-deep-') as folder:
        for name in args.variants:
            settings = dict(base, **VARIANTS[name])
            if name == 'staged':
                print('--- vgg11 (for staged)', flush=True)
                results['vgg11 (for staged)'] = run(dict(base, arch='vgg11'),
                                                    os.path.join(folder, 'vgg11'))
                settings['init_from'] = os.path.join(folder, 'vgg11')
            print(f'--- {name}', flush=True)
            results[name] = run(settings, os.path.join(folder, name))
    print(f"\n{'variant':<20} {'loss by epoch':<22} {'test acc by epoch':<22} {'s/epoch':>8}")
    for name, result in results.items():
        epochs = result['epochs']
        print(f"{name:<20} {' '.join('%.4f' % e['loss'] for e in epochs):<22} "
              f"{' '.join('%.3f' % e['test_acc'] for e in epochs):<22} "
              f"{sum(e['time'] for e in epochs) / len(epochs):8.1f}")
    if args.json:
        for result in results.values():
            result['settings'].pop('init_from', None)  # a temporary folder
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'machine': machine, 'args': vars(args), 'results': results}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
