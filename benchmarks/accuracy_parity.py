"""Same learning on both paths: the chapter's pipeline and this package's, from the same start.

    python benchmarks/accuracy_parity.py [--resize 96] [--train-samples 12000] [--epochs 2]

Both runs start from identical initial parameters (saved once, loaded twice),
train the ratio-4 VGG-11 with SGD lr 0.05 on the same first ``--train-samples``
training images and are tested on the full test set.  Their shuffling and
dropout masks differ, so the two accuracies agree within run-to-run noise,
not to the digit; ``--seeds`` repeats the pair to show that noise.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


def run_pair(resize: int, train_samples: int, epochs: int, seed: int, data_dir: str) -> dict:
    """Train both paths once from the same initial parameters; return their final test accuracy."""
    import vgg  # before MXNet: the thread setting
    # isort: split
    import gluonbook as gb
    import mxnet as mx
    import numpy as np
    from chapter_pipeline import chapter_loader, quiet_stdout
    from mxnet import gluon, init, nd

    from vgg.data import FashionMNISTIter, load_arrays

    arrays = load_arrays(data_dir, download=False)
    images, labels = (a[:train_samples] for a in arrays['train'])
    test_images, test_labels = arrays['test']
    conv_arch = vgg.narrow(vgg.VGG11, 4)
    mx.random.seed(seed)
    np.random.seed(seed)
    start = vgg.vgg(conv_arch, 10)
    start.initialize(init.Xavier())
    start(nd.zeros((1, 1, resize, resize)))
    params = os.path.join(tempfile.mkdtemp(), 'start.params')
    start.save_parameters(params)

    def chapter_iter(x, y, shuffle):
        return chapter_loader(x, y, resize, 128, shuffle, num_workers=2)

    results = {}
    for path in ('chapter', 'vgg'):
        net = vgg.vgg(conv_arch, 10)
        net.load_parameters(params)
        trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.05})
        loss = gluon.loss.SoftmaxCrossEntropyLoss()
        with quiet_stdout():
            if path == 'chapter':
                gb.train(chapter_iter(images, labels, True),
                         chapter_iter(test_images[:128], test_labels[:128], False),
                         net, loss, trainer, mx.cpu(), epochs)
                test_iter = chapter_iter(test_images, test_labels, False)
                results[path] = gb.evaluate_accuracy(test_iter, net, mx.cpu())
            else:
                net.hybridize(static_alloc=True, static_shape=True)
                train_iter = FashionMNISTIter(images, labels, 128, resize, shuffle=True,
                                              seed=seed)
                test_iter = FashionMNISTIter(test_images, test_labels, 128, resize)
                history = vgg.train(train_iter, test_iter, net, loss, trainer, mx.cpu(),
                                    epochs, progress=False)
                results[path] = history[-1]['test_acc']
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--resize', type=int, default=96)
    parser.add_argument('--train-samples', type=int, default=12000)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--data-dir', default=os.environ.get('VGG_DATA_DIR'))
    args = parser.parse_args(argv)
    print(f'resize {args.resize}, {args.train_samples} training images, {args.epochs} epochs, '
          'full test set')
    print(f"{'seed':>4} {'chapter test acc':>16} {'vgg test acc':>12} {'difference':>10}")
    for seed in args.seeds:
        r = run_pair(args.resize, args.train_samples, args.epochs, seed, args.data_dir)
        gap = r['vgg'] - r['chapter']
        print(f"{seed:>4} {r['chapter']:>16.4f} {r['vgg']:>12.4f} {gap:>+10.4f}", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
