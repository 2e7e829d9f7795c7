"""VGG blocks and networks, the paper's configurations, and channel narrowing.

A ``conv_arch`` is a tuple of ``(num_convs, num_channels)`` pairs, one per VGG
block, exactly as the chapter writes it.  The four configurations of Table 1 of
Simonyan & Zisserman (2014), "Very Deep Convolutional Networks for Large-Scale
Image Recognition", are given in that form.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import mxnet as mx
from mxnet import gluon, init, nd
from mxnet.gluon import nn

from .base import NUM_CLASSES, check_positive

ConvArch = Tuple[Tuple[int, int], ...]

# Table 1 of the paper, column by column (A, B, D, E); the 1x1 convolutions of
# configuration C are not expressible as (num_convs, num_channels) pairs.
VGG11: ConvArch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG13: ConvArch = ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))
VGG16: ConvArch = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG19: ConvArch = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))

CONV_ARCHS = {'vgg11': VGG11, 'vgg13': VGG13, 'vgg16': VGG16, 'vgg19': VGG19}
# Every architecture name: the paper's four, and each with batch norm after every convolution.
BN_SUFFIX = '_bn'
ARCH_NAMES = tuple(CONV_ARCHS) + tuple(name + BN_SUFFIX for name in CONV_ARCHS)
# Initialisers by name: the chapter's Xavier, and He et al.'s for ReLU networks
# (std sqrt(2 / fan_in), MXNet's MSRAPrelu with slope 0).
INITS = {'xavier': lambda: init.Xavier(),
         'msra': lambda: init.MSRAPrelu(factor_type='in', slope=0.0)}

CHANNELS = 1  # Fashion-MNIST's images are grey; its classes are base.NUM_CLASSES


class _Sequential(nn.HybridSequential):
    """A hybridizable Sequential that Gluon names ``sequentialN`` like ``nn.Sequential``.

    The chapter prints ``blk.name`` for every block; keeping the book's names
    while allowing ``hybridize()`` needs only a different naming alias.
    """

    def _alias(self) -> str:
        return 'sequential'


def vgg_block(num_convs: int, num_channels: int, batch_norm: bool = False) -> nn.HybridSequential:
    """One VGG block: ``num_convs`` 3x3 convolutions (padding 1, ReLU), then a 2x2 max-pool.

    Parameters
    ----------
    num_convs : int
        Number of convolution layers, at least 1.
    num_channels : int
        Output channels of every convolution in the block, at least 1.
    batch_norm : bool
        Put batch normalisation between each convolution and its ReLU
        (Conv2D -> BatchNorm -> ReLU), as MXNet's model zoo ``vgg*_bn`` does.
        False gives exactly the chapter's layers.

    Returns
    -------
    mxnet.gluon.nn.HybridSequential
        The block; it halves the height and width of its input.
    """
    check_positive('num_convs', num_convs, int)
    check_positive('num_channels', num_channels, int)
    blk = _Sequential()
    for _ in range(num_convs):
        if batch_norm:
            blk.add(nn.Conv2D(num_channels, kernel_size=3, padding=1), nn.BatchNorm(),
                    nn.Activation('relu'))
        else:
            blk.add(nn.Conv2D(num_channels, kernel_size=3, padding=1, activation='relu'))
    blk.add(nn.MaxPool2D(pool_size=2, strides=2))
    return blk


def vgg(conv_arch: Sequence[Tuple[int, int]], num_outputs: int = 10,
        batch_norm: bool = False) -> nn.HybridSequential:
    """The VGG network of the chapter: one block per ``conv_arch`` entry, then the classifier.

    The classifier is Dense(4096, relu), Dropout(0.5), Dense(4096, relu),
    Dropout(0.5), Dense(num_outputs).

    Parameters
    ----------
    conv_arch : sequence of (int, int)
        ``(num_convs, num_channels)`` for every block, e.g. :data:`VGG11`.
    num_outputs : int
        Number of classes.
    batch_norm : bool
        Batch normalisation after every convolution (see :func:`vgg_block`).

    Returns
    -------
    mxnet.gluon.nn.HybridSequential
        The uninitialised network; iterating over it yields its blocks and layers.
    """
    conv_arch = check_conv_arch(conv_arch)
    check_positive('num_outputs', num_outputs, int)
    net = _Sequential()
    for num_convs, num_channels in conv_arch:
        net.add(vgg_block(num_convs, num_channels, batch_norm))
    net.add(nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(num_outputs))
    return net


def alexnet(num_outputs: int = 10) -> nn.HybridSequential:
    """The book's AlexNet (224x224 input), for comparing its cost with VGG's.

    Five convolutions (96 11x11 stride 4; 256 5x5; 384, 384, 256 3x3), three
    3x3 stride-2 max-pools, and the same classifier as :func:`vgg`.

    Parameters
    ----------
    num_outputs : int
        Number of classes.

    Returns
    -------
    mxnet.gluon.nn.HybridSequential
        The uninitialised network.
    """
    check_positive('num_outputs', num_outputs, int)
    net = _Sequential()
    net.add(nn.Conv2D(96, kernel_size=11, strides=4, activation='relu'),
            nn.MaxPool2D(pool_size=3, strides=2),
            nn.Conv2D(256, kernel_size=5, padding=2, activation='relu'),
            nn.MaxPool2D(pool_size=3, strides=2),
            nn.Conv2D(384, kernel_size=3, padding=1, activation='relu'),
            nn.Conv2D(384, kernel_size=3, padding=1, activation='relu'),
            nn.Conv2D(256, kernel_size=3, padding=1, activation='relu'),
            nn.MaxPool2D(pool_size=3, strides=2),
            nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(num_outputs))
    return net


def narrow(conv_arch: Sequence[Tuple[int, int]], ratio: float) -> ConvArch:
    """Divide every block's channel count by ``ratio`` (``int(c / ratio)``), as the chapter does.

    Parameters
    ----------
    conv_arch : sequence of (int, int)
        The configuration to narrow.
    ratio : float
        Positive divisor; the chapter uses 4.

    Returns
    -------
    tuple of (int, int)
        The narrowed configuration (the chapter's ``small_conv_arch`` for ratio 4).

    Raises
    ------
    ValueError
        If ``ratio`` is not positive or leaves a block with zero channels.
    """
    conv_arch = check_conv_arch(conv_arch)
    check_positive('ratio', ratio)
    narrowed = tuple((num_convs, int(num_channels / ratio))
                     for num_convs, num_channels in conv_arch)
    if any(num_channels == 0 for _, num_channels in narrowed):
        smallest = min(num_channels for _, num_channels in conv_arch)
        raise ValueError(f'ratio {ratio} leaves a block with 0 channels; '
                         f'use a ratio of at most {smallest} for this architecture')
    return narrowed


def layers(net: gluon.Block) -> List[gluon.Block]:
    """The layers of ``net`` in the order they run, through nested Sequentials.

    An ``nn.Sequential`` or ``nn.HybridSequential`` (subclasses included) that
    only runs its children in order is replaced by its children, recursively;
    every other block is one layer.  A list rather than the blocks themselves:
    the same layers, so running them in turn is running ``net``.
    """
    if _runs_children_in_order(net):
        return [leaf for index in range(len(net)) for leaf in layers(net[index])]
    return [net]


def _runs_children_in_order(block: gluon.Block) -> bool:
    # HybridSequential is not a subclass of Sequential in MXNet 1.x, hence both; a
    # subclass that overrides forward (a residual block, say) is a layer of its own.
    return ((isinstance(block, nn.Sequential) and type(block).forward is nn.Sequential.forward)
            or (isinstance(block, nn.HybridSequential)
                and type(block).hybrid_forward is nn.HybridSequential.hybrid_forward
                and type(block).forward is nn.HybridSequential.forward))


def parse_arch(name: str) -> Tuple[ConvArch, bool]:
    """``(conv_arch, batch_norm)`` of an architecture name: 'vgg11' ... 'vgg19', or with '_bn'."""
    try:
        lower = name.lower()
        batch_norm = lower.endswith(BN_SUFFIX)
        return CONV_ARCHS[lower[:-len(BN_SUFFIX)] if batch_norm else lower], batch_norm
    except (KeyError, AttributeError):
        raise ValueError(f'unknown architecture {name!r}; choose one of '
                         f'{", ".join(ARCH_NAMES)}') from None


def min_input_size(conv_arch: Sequence[Tuple[int, int]]) -> int:
    """The smallest height/width that survives every block's 2x2 pooling (2 ** number of blocks)."""
    return 2 ** len(conv_arch)


def check_conv_arch(conv_arch: Sequence[Tuple[int, int]]) -> ConvArch:
    """Return ``conv_arch`` as a tuple of int pairs, or raise ValueError saying what is wrong."""
    try:
        pairs = tuple((num_convs, num_channels) for num_convs, num_channels in conv_arch)
    except (TypeError, ValueError):
        raise ValueError('conv_arch must be a sequence of (num_convs, num_channels) pairs, '
                         f'got {conv_arch!r}') from None
    if not pairs:
        raise ValueError('conv_arch must hold at least one (num_convs, num_channels) pair')
    for num_convs, num_channels in pairs:
        check_positive('num_convs', num_convs, int)
        check_positive('num_channels', num_channels, int)
    return pairs


def check_resize(conv_arch: Sequence, resize: int) -> None:
    """Raise ValueError unless ``resize`` survives every pooling block of ``conv_arch``."""
    if resize < min_input_size(conv_arch):
        raise ValueError(f'resize {resize} is too small: {len(conv_arch)} pooling blocks '
                         f'need at least {min_input_size(conv_arch)} pixels')


# MXNet 1.x indexes an array's elements with int32.
MAX_ELEMENTS = 2 ** 31 - 1


def check_sizes(conv_arch: Sequence[Tuple[int, int]], resize: int, num_outputs: int = NUM_CLASSES,
                channels: int = CHANNELS, batch_size: int = 1) -> None:
    """Raise ValueError if an array of the network would exceed MXNet's element limit.

    Checked: the input batch, each block's convolution weights and output for
    ``batch_size`` images, and every dense layer's weight.
    """
    sizes = [('the input batch', batch_size * channels * resize * resize)]
    side, in_channels = resize, channels
    for index, (_, num_channels) in enumerate(conv_arch, 1):
        sizes.append((f'block {index}\'s convolution weight',
                      max(in_channels, num_channels) * num_channels * 9))
        sizes.append((f'block {index}\'s output', batch_size * num_channels * side * side))
        side, in_channels = side // 2, num_channels
    features = conv_arch[-1][1] * side * side
    sizes += [('the first dense weight', features * 4096),
              ('the output weight', 4096 * num_outputs)]
    for what, size in sizes:
        if size > MAX_ELEMENTS:
            raise ValueError(f'{what} would hold {size:,} elements, more than MXNet\'s limit of '
                             f'{MAX_ELEMENTS:,} per array: use a smaller resize, batch or number '
                             'of classes, or a larger ratio')


def build_net(arch: str, ratio: float, resize: int, num_outputs: int = NUM_CLASSES,
              ctx: Optional[List[mx.Context]] = None, channels: int = CHANNELS,
              initializer: str = 'xavier') -> gluon.HybridBlock:
    """The narrowed VGG network, initialised on ``ctx`` with every shape known.

    A forward pass on a zero batch fixes the shapes, so that loading parameters
    of another configuration fails on the spot instead of later, inside MXNet.

    Parameters
    ----------
    arch : str
        One of :data:`ARCH_NAMES` ('vgg11', ..., 'vgg19_bn').
    ratio : float
        Channel divisor (:func:`narrow`).
    resize : int
        Input height and width.
    num_outputs, channels : int
        Classes and input channels.
    ctx : list of Context, optional
        Where the parameters live (default the CPU).
    initializer : str
        'xavier' (the chapter's) or 'msra' (He); batch norm and biases keep
        their own initialisation (ones and zeros).

    Raises
    ------
    ValueError
        If the architecture or initializer is unknown, the ratio leaves a block
        without channels or ``resize`` is too small for the pooling blocks.
    """
    conv_arch, batch_norm = parse_arch(arch)
    conv_arch = narrow(conv_arch, ratio)
    check_resize(conv_arch, resize)
    check_sizes(conv_arch, resize, num_outputs, channels)
    if initializer not in INITS:
        raise ValueError(f'unknown initializer {initializer!r}; choose one of '
                         f'{", ".join(INITS)}')
    ctx = ctx or [mx.cpu()]
    net = vgg(conv_arch, num_outputs, batch_norm)
    net.initialize(INITS[initializer](), ctx=ctx)
    net(nd.zeros((1, channels, resize, resize), ctx=ctx[0]))
    return net
