"""Using a trained network: class probabilities for image files, a confusion matrix on a test set.

Image files are turned into what the loader holds, 28x28 uint8 grey images,
and then go through the loader's own batch transform
(:meth:`vgg.data.FashionMNISTIter.transform`: float32, bilinear resize, /255).
Fashion-MNIST shows a light object on a black background; an image is used
as it is unless ``invert`` is set (for a dark object on a light background,
such as most product photos).
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO, Iterable, List, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon, nd
from PIL import Image, ImageOps

from .data import TEXT_LABELS, FashionMNISTIter

SIDE = 28  # Fashion-MNIST's image side
# Longest side padded to a square as it is; a larger image is box-reduced first (see read_image).
MAX_SIDE = 1024
# What a path that is not a regular file is, by st_mode.
_NOT_FILES = ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISDIR, 'a directory'),
              (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
              (stat.S_ISSOCK, 'a socket'))


def read_image(path: str, invert: bool = False) -> np.ndarray:
    """Read an image file (PNG, JPEG, ...; any size, colour or grey) as a 28x28 uint8 grey image.

    The image is turned upright as a photo viewer shows it (its EXIF
    orientation, as cameras and phones record it), converted to grey (ITU-R
    601 luma), inverted if ``invert``, padded with black to a centred square
    (keeping its aspect ratio, as Fashion-MNIST does) and resized to 28x28 with
    Pillow's antialiased bilinear filter.  Transparent pixels count as
    background.  An image longer than :data:`MAX_SIDE` is first box-reduced by
    a whole factor, so that the square never outgrows its content (a 1x60000
    image would make a 3.6 GB one).

    Raises
    ------
    ValueError
        If the file is missing, not a regular file (a FIFO would block the
        reader forever) or not an image Pillow can read.
    """
    try:
        with _open_regular(path) as f, Image.open(f) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ('I', 'F') or img.mode.startswith('I;16'):
                grey = _scaled_to_8_bits(img, path)
            else:
                if img.mode in ('RGBA', 'LA', 'PA') or 'transparency' in img.info:
                    colour = (255, 255, 255, 255) if invert else (0, 0, 0, 255)
                    background = Image.new('RGBA', img.size, colour)
                    img = Image.alpha_composite(background, img.convert('RGBA'))
                grey = img.convert('L')
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and truncated files are OSErrors; a broken PNG chunk
        # is a SyntaxError in Pillow.
        reason = getattr(err, 'strerror', None) or err
        raise ValueError(f'{path}: not an image that can be read ({reason})') from None
    if invert:
        grey = ImageOps.invert(grey)
    factor = -(-max(grey.size) // MAX_SIDE)
    if factor > 1:
        grey = grey.reduce(factor)
    side = max(grey.size)
    square = Image.new('L', (side, side), 0)
    square.paste(grey, ((side - grey.width) // 2, (side - grey.height) // 2))
    return np.asarray(square.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.uint8)


def _open_regular(path: str) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file (or a link to one).

    Opening does not wait for a FIFO's writer (O_NONBLOCK); the opened file's
    type is checked, so that the file read is the one checked.

    Raises
    ------
    OSError
        If it cannot be opened.
    ValueError
        If it is not a regular file (the message says what it is).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _NOT_FILES if test(mode)), 'a special file')
        raise ValueError(f'{kind}, not a regular file')
    return os.fdopen(fd, 'rb')


def _scaled_to_8_bits(img: Image.Image, path: str) -> Image.Image:
    """A 16- or 32-bit integer or a float grey image scaled to 8 bits.

    Pillow's own conversion to 'L' clips instead: a 16-bit image saturates
    and a float image in 0..1 becomes black and white.  Integer images are
    scaled from their type's range (16 bits for 'I;16' and for 'I' images
    whose values fit in 16 bits, as 16-bit PNGs are read); float images from
    0..1 when their values lie in it, else they are taken as 0..255.
    """
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError('it holds values that are not finite numbers')
    if img.mode == 'F':
        top = 1.0 if values.min() >= 0 and values.max() <= 1 else 255.0
    else:
        top = 65535.0 if img.mode.startswith('I;16') or values.max() <= 65535 else 2.0 ** 32 - 1
    scaled = np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode='L')


def predict_probabilities(net: gluon.Block, images: np.ndarray, resize: int,
                          ctx: mx.Context = mx.cpu(), batch_size: int = 64) -> np.ndarray:
    """Class probabilities (softmax of the logits) for uint8 images of shape (N, 28, 28).

    Returns
    -------
    numpy.ndarray
        float32 of shape (N, number of classes).
    """
    labels = np.zeros(len(images), dtype=np.uint8)  # the loader wants labels; unused here
    batches = FashionMNISTIter(images, labels, batch_size, resize, ctx=ctx)
    return np.concatenate([nd.softmax(net(X)).asnumpy() for X, _ in batches])


def confusion_matrix(net: gluon.Block, data_iter: Iterable, ctx: mx.Context = mx.cpu(),
                     num_classes: int = len(TEXT_LABELS)) -> np.ndarray:
    """Counts of (true class, predicted class) over ``data_iter``'s batches.

    Returns
    -------
    numpy.ndarray
        int64 of shape (num_classes, num_classes): row = true class, column = prediction.
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for X, y in data_iter:
        predicted = net(X.as_in_context(ctx)).argmax(axis=1).asnumpy().astype(np.int64)
        np.add.at(matrix, (y.asnumpy().astype(np.int64), predicted), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """The fraction of each true class predicted right, from a :func:`confusion_matrix`.

    Returns
    -------
    numpy.ndarray
        float64, one per row of ``matrix``; 0 for a class with no images.
    """
    return matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)


def top_classes(probabilities: Sequence[float], k: int) -> List[Tuple[str, float]]:
    """The ``k`` most probable ``(class name, probability)`` pairs, most probable first."""
    order = np.argsort(probabilities)[::-1][:k]
    return [(TEXT_LABELS[i], float(probabilities[i])) for i in order]
