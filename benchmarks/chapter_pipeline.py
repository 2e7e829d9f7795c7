"""The chapter's input pipeline and a quiet stdout, shared by the benchmarks.

MXNet is imported inside the functions: the benchmarks choose whether ``vgg``
(which sets the OpenMP thread count) or MXNet loads first.
"""
from __future__ import annotations

import contextlib
import os
import sys


def chapter_loader(images, labels, resize: int, batch_size: int, shuffle: bool,
                   num_workers: int):
    """gluon's DataLoader with per-image Resize + ToTensor, as the chapter builds it.

    It is fed from our uint8 arrays: gluon's ``FashionMNIST`` rejects Zalando's
    files by checksum, but yields exactly these items.
    """
    from mxnet import nd
    from mxnet.gluon import data as gdata

    transformer = gdata.vision.transforms.Compose(
        [gdata.vision.transforms.Resize(resize), gdata.vision.transforms.ToTensor()])
    dataset = gdata.ArrayDataset(nd.array(images[..., None], dtype='uint8'),
                                 labels.astype('int32'))
    return gdata.DataLoader(dataset.transform_first(transformer), batch_size, shuffle=shuffle,
                            num_workers=num_workers)


@contextlib.contextmanager
def quiet_stdout():
    """Discard what the training loops print (the benchmarks report their own figures)."""
    with open(os.devnull, 'w') as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            yield
        finally:
            sys.stdout = stdout
