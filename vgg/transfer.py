"""Starting a network from trained weights: a shallower VGG (the paper's staged training)
or MXNet's Gluon model zoo.

Both copy parameters into a network built by :func:`vgg.vgg` (the chapter's
layer layout), so everything else here (training, run directories, export)
works on the result unchanged.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Tuple

import mxnet as mx
from mxnet import gluon, nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import model_store
from mxnet.gluon.model_zoo.vision import get_vgg

from .model import CONV_ARCHS, build_net, layers, parse_arch

# The paper (section 3.1) starts its deeper nets with the first four convolutions
# and the last three fully connected layers of a trained net A.
STAGED_CONVS, STAGED_DENSES = 4, 3
ZOO_CLASSES, ZOO_CHANNELS = 1000, 3


def _convs_by_place(net: gluon.Block) -> Dict[Tuple[int, int], nn.Conv2D]:
    """Every convolution keyed by (block number, number within the block), in order."""
    places = {}
    for block_index, block in enumerate(net):
        convs = [layer for layer in layers(block) if isinstance(layer, nn.Conv2D)]
        places.update({(block_index, i): conv for i, conv in enumerate(convs)})
    return places


def _denses(net: gluon.Block) -> List[nn.Dense]:
    return [layer for layer in layers(net) if isinstance(layer, nn.Dense)]


def _copy(target: gluon.Block, source: gluon.Block) -> bool:
    """Copy ``source``'s weight and bias into ``target`` if every shape matches."""
    pairs = [(getattr(target, name), getattr(source, name)) for name in ('weight', 'bias')
             if getattr(target, name, None) is not None]
    if any(getattr(source, name, None) is None for name in ('weight', 'bias')
           if getattr(target, name, None) is not None):
        return False
    try:
        if any(t.shape != s.shape for t, s in pairs):
            return False
        for t, s in pairs:
            t.set_data(s.data(s.list_ctx()[0]))
    except gluon.parameter.DeferredInitializationError:
        raise ValueError('init_from needs both networks initialised with known shapes '
                         '(run a batch through them, or build them with vgg.build_net)') from None
    return True


def init_from(net: gluon.Block, trained: gluon.Block) -> List[str]:
    """Start ``net`` from a trained shallower VGG, as the paper trained its deeper nets.

    The first four convolutions of ``net`` take the weights and biases of the
    convolution at the same place (same block, same position in it) of
    ``trained``, and its last three dense layers those of ``trained``'s last
    three, wherever the shapes match; every other layer (and every batch
    norm) keeps its own initialisation.

    Parameters
    ----------
    net : mxnet.gluon.Block
        A :func:`vgg.vgg` network, initialised with known shapes.
    trained : mxnet.gluon.Block
        A trained :func:`vgg.vgg` network, e.g. ``vgg.load_net(RUN_DIR)``.

    Returns
    -------
    list of str
        The names of ``net``'s layers that were copied.

    Raises
    ------
    ValueError
        If no layer matched (say which shapes differ), or a network has unknown shapes.
    """
    copied = []
    source_convs = _convs_by_place(trained)
    for place, conv in list(_convs_by_place(net).items())[:STAGED_CONVS]:
        if place in source_convs and _copy(conv, source_convs[place]):
            copied.append(conv.name)
    for dense, source in zip(_denses(net)[-STAGED_DENSES:], _denses(trained)[-STAGED_DENSES:]):
        if _copy(dense, source):
            copied.append(dense.name)
    if not copied:
        raise ValueError('init_from: no layer of the trained network fits (the first four '
                         'convolutions and the last three dense layers all differ in shape: '
                         'train the shallower network with the same ratio, resize and classes)')
    return copied


def _zoo_file(name: str, params_file: Optional[str], root: Optional[str]) -> str:
    if params_file is not None:
        if not os.path.isfile(params_file):
            raise ValueError(f'model zoo parameters {params_file} not found')
        return params_file
    root = os.path.expanduser(root or os.path.join(mx.base.data_dir(), 'models'))
    expected = os.path.join(root, f'{name}-{model_store.short_hash(name)}.params')
    try:
        return model_store.get_model_file(name, root=root)
    except Exception as err:  # offline: requests' and urllib's errors, or a bad download
        for partial in glob.glob(expected[:-len('.params')] + '.zip*'):
            os.remove(partial)
        raise ValueError(f"{name}'s weights are not in MXNet's model store folder and could "
                         f'not be downloaded ({type(err).__name__}); put {expected} there '
                         '(from a machine that is online: mxnet.gluon.model_zoo.vision.'
                         f'get_model("{name}", pretrained=True)) or pass its params file') from None


def _zoo_network(name: str, path: str) -> gluon.HybridBlock:
    """MXNet's model zoo network ``name`` with the weights of ``path`` (either naming style)."""
    conv_arch, batch_norm = parse_arch(name)
    num_layers = {arch: int(key[3:]) for key, arch in CONV_ARCHS.items()}[conv_arch]
    try:
        loaded = nd.load(path)
    except mx.base.MXNetError:
        raise ValueError(f'{path} is not an MXNet parameter file (truncated or corrupt)') from None
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f'{path} holds no named parameters')
    if any('.' in key for key in loaded):  # save_parameters: names by structure
        zoo = get_vgg(num_layers, batch_norm=batch_norm)
        load = lambda: zoo.load_parameters(path, ctx=mx.cpu())  # noqa: E731
    else:  # collect_params().save: names with the block's prefix, as saved
        first_conv = min((key for key in loaded if key.endswith('conv0_weight')), default='')
        prefix = first_conv[:-len('conv0_weight')]
        zoo = get_vgg(num_layers, batch_norm=batch_norm, prefix=prefix)
        load = lambda: zoo.collect_params().load(path, ctx=mx.cpu())  # noqa: E731
    try:
        load()
    except (AssertionError, ValueError, mx.base.MXNetError) as err:
        detail = str(err).split(', which contains')[0].split('\n')[0]
        raise ValueError(f'{path} does not hold the weights of {name}: {detail}') from None
    return zoo


def load_model_zoo_weights(net: gluon.Block, name: str, params_file: Optional[str] = None,
                           root: Optional[str] = None) -> List[str]:
    """Copy the weights of MXNet's model zoo network ``name`` into ``net`` (a :func:`vgg.vgg`
    network of the same architecture at full width, initialised with known shapes).

    Where ``net`` differs from the zoo's, for fine-tuning: a first convolution
    on one channel gets the sum of the zoo's RGB weights (a grey image then
    gives what the zoo network gives for that image repeated on three
    channels), and an output layer for another number of classes keeps its
    own initialisation.

    Returns
    -------
    list of str
        What was adapted (empty when ``net`` is the zoo network itself).

    Raises
    ------
    ValueError
        If the weights cannot be found or read, or do not fit ``net``.
    """
    zoo = _zoo_network(name, _zoo_file(name, params_file, root))
    sources = list(zoo.collect_params().values())
    targets = list(net.collect_params().values())
    if len(sources) != len(targets):
        raise ValueError(f'{name} has {len(sources)} parameters, this network {len(targets)}: '
                         f'build it as {name} (arch {name}, ratio 1)')
    head = {id(_denses(net)[-1].weight), id(_denses(net)[-1].bias)}
    adapted = []
    for i, (target, source) in enumerate(zip(targets, sources)):
        data = source.data()
        if i == 0 and target.shape[1] == 1 and data.shape[1] == ZOO_CHANNELS:
            data = data.sum(axis=1, keepdims=True)
            adapted.append('first convolution: RGB weights summed for one grey channel')
        elif id(target) in head and target.shape != data.shape:
            if id(target) == id(_denses(net)[-1].weight):
                adapted.append(f'output layer: new, for {target.shape[0]} classes')
            continue
        if target.shape != data.shape:
            raise ValueError(f'{name} does not fit this network: {source.name} has shape '
                             f'{data.shape}, {target.name} {target.shape} (the zoo\'s first '
                             'dense layer takes 512 x 7 x 7 inputs: images of 224 pixels)')
        target.set_data(data)
    return adapted


def from_model_zoo(name: str, params_file: Optional[str] = None, root: Optional[str] = None,
                   num_outputs: int = ZOO_CLASSES, channels: int = ZOO_CHANNELS,
                   resize: int = 224, ctx: Optional[List[mx.Context]] = None) -> gluon.HybridBlock:
    """A :func:`vgg.vgg` network holding the weights of MXNet's model zoo network ``name``.

    Parameters
    ----------
    name : str
        'vgg11', 'vgg13', 'vgg16', 'vgg19', or one of them with '_bn'.
    params_file : str, optional
        The zoo's parameter file (either naming style MXNet writes); default
        MXNet's model store in ``root``, downloaded when missing and online.
    root : str, optional
        The model store folder (default ``$MXNET_HOME/models``).
    num_outputs : int
        Classes: another number than 1000 gets a new, initialised output layer.
    channels : int
        3, or 1 to fold the first convolution's RGB weights into one grey channel.
    resize : int
        Input size the network is built for (the zoo's dense layers need 224).
    ctx : list of Context, optional
        Where the parameters live (default the CPU).

    Raises
    ------
    ValueError
        If the name is unknown, or the weights cannot be found, read or fitted.
    """
    parse_arch(name)  # an unknown name is told before the channels
    if channels not in (1, ZOO_CHANNELS):
        raise ValueError(f'channels must be 1 or 3, got {channels!r}')
    # The zoo's networks are the paper's at full width: ratio 1.
    net = build_net(name, 1, resize, num_outputs, ctx, channels)
    load_model_zoo_weights(net, name.lower(), params_file, root)
    return net
