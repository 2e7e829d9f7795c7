import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn

from vgg.model import (
    ARCH_NAMES,
    CONV_ARCHS,
    VGG11,
    VGG13,
    VGG16,
    VGG19,
    build_net,
    check_conv_arch,
    check_resize,
    layers,
    min_input_size,
    narrow,
    parse_arch,
    vgg,
    vgg_block,
)


def count_params(net, input_shape):
    """Parameter elements of ``net`` for inputs of ``input_shape``, from symbolic shape inference:
    a forward pass of the paper's networks at 224x224 would cost seconds of CPU (and, never
    waited for, run on into the next tests)."""
    symbol = net(mx.sym.var('data'))
    shapes = dict(zip(symbol.list_arguments(), symbol.infer_shape(data=input_shape)[0]))
    del shapes['data']
    assert set(shapes) == set(net.collect_params())  # the symbol's weights are the network's
    return sum(int(np.prod(shape)) for shape in shapes.values())


def test_vgg_block_layers_and_shape():
    blk = vgg_block(2, 8)
    layers = list(blk)
    assert [type(l) for l in layers] == [nn.Conv2D, nn.Conv2D, nn.MaxPool2D]
    for conv in layers[:2]:
        assert conv._kwargs['kernel'] == (3, 3) and conv._kwargs['pad'] == (1, 1)
        assert conv.act.name.endswith('relu') or 'relu' in str(conv.act)
    pool = layers[2]
    assert pool._kwargs['kernel'] == (2, 2) and pool._kwargs['stride'] == (2, 2)
    blk.initialize()
    assert blk(nd.ones((3, 5, 10, 10))).shape == (3, 8, 5, 5)


def test_vgg11_chapter_shapes_and_names():
    """The chapter's loop over VGG-11's blocks (224x224, 1000 classes): each block halves the
    image and has the configuration's channels; then the classifier."""
    net = vgg(VGG11, 1000)
    net.initialize()
    X = nd.random.uniform(shape=(1, 1, 224, 224))
    shapes = []
    for blk in net:
        X = blk(X)
        shapes.append(X.shape)
    # From the configuration alone: block i has VGG11[i] = (convs, channels), output side
    # 224 / 2^(i+1).
    expected = [(1, channels, 224 >> (i + 1), 224 >> (i + 1))
                for i, (_, channels) in enumerate(VGG11)] + [(1, 4096)] * 4 + [(1, 1000)]
    assert shapes == expected == [
        (1, 64, 112, 112), (1, 128, 56, 56), (1, 256, 28, 28), (1, 512, 14, 14), (1, 512, 7, 7),
        (1, 4096), (1, 4096), (1, 4096), (1, 4096), (1, 1000)]
    blocks, classifier = list(net)[:5], list(net)[5:]
    # The chapter prints each block's name: the conv blocks are sequentials of the configuration's
    # convolutions and a pooling layer.
    assert all(blk.name.startswith('sequential') for blk in blocks)
    assert [[type(layer) for layer in blk] for blk in blocks] == [
        [nn.Conv2D] * convs + [nn.MaxPool2D] for convs, _ in VGG11]
    assert [[layer.weight.shape for layer in list(blk)[:-1]] for blk in blocks] == [
        [(64, 1, 3, 3)], [(128, 64, 3, 3)], [(256, 128, 3, 3), (256, 256, 3, 3)],
        [(512, 256, 3, 3), (512, 512, 3, 3)], [(512, 512, 3, 3), (512, 512, 3, 3)]]
    assert [layer.name.rstrip('0123456789') for layer in classifier] == [
        'dense', 'dropout', 'dense', 'dropout', 'dense']
    assert [layer.weight.shape for layer in classifier[::2]] == [
        (4096, 512 * 7 * 7), (4096, 4096), (1000, 4096)]


def test_classifier_layers():
    layers = list(vgg(((1, 4),), 7))[1:]
    assert [type(l) for l in layers] == [nn.Dense, nn.Dropout, nn.Dense, nn.Dropout, nn.Dense]
    assert layers[0]._units == 4096 and layers[2]._units == 4096 and layers[4]._units == 7
    assert layers[1]._rate == 0.5 and layers[3]._rate == 0.5


def test_hybridized_network_gives_same_output():
    net = vgg(narrow(VGG11, 16), 10)
    net.initialize(mx.init.Xavier())
    X = nd.random.uniform(shape=(2, 1, 32, 32))
    expected = net(X).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(X).asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_paper_configurations_have_8_10_13_16_conv_layers():
    depths = [sum(n for n, _ in arch) for arch in (VGG11, VGG13, VGG16, VGG19)]
    assert depths == [8, 10, 13, 16]
    assert CONV_ARCHS == {'vgg11': VGG11, 'vgg13': VGG13, 'vgg16': VGG16, 'vgg19': VGG19}


@pytest.mark.parametrize('name,expected', [('vgg11', 132_863_336), ('vgg13', 133_047_848),
                                           ('vgg16', 138_357_544), ('vgg19', 143_667_240)])
def test_parameter_counts_match_the_paper(name, expected):
    assert count_params(vgg(parse_arch(name)[0], 1000), (1, 3, 224, 224)) == expected


def test_narrow_is_the_chapters_small_conv_arch():
    assert narrow(VGG11, 4) == ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
    assert narrow(VGG11, 3) == tuple((n, int(c / 3)) for n, c in VGG11)
    assert narrow([[1, 10]], 2.5) == ((1, 4),)


@pytest.mark.parametrize('ratio', [0, -1, 'four', None, True])
def test_narrow_rejects_non_positive_ratios(ratio):
    with pytest.raises(ValueError, match='ratio'):
        narrow(VGG11, ratio)


def test_narrow_too_far_says_the_largest_ratio():
    with pytest.raises(ValueError, match='0 channels.*at most 64'):
        narrow(VGG11, 65)


@pytest.mark.parametrize('conv_arch', [(), ((0, 4),), ((1, 0),), ((1, 2.5),), 5, ((1, 2, 3),)])
def test_bad_conv_arch_is_a_clear_error(conv_arch):
    with pytest.raises(ValueError, match='conv_arch|num_convs|num_channels'):
        vgg(conv_arch, 10)


@pytest.mark.parametrize('args,message', [
    ((0, 4), '^num_convs must be positive, got 0$'),
    ((1, -2), '^num_channels must be positive, got -2$'),
    ((2.0, 4), r'^num_convs must be an integer, got 2\.0$')])
def test_bad_block_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        vgg_block(*args)


def test_bad_num_outputs():
    with pytest.raises(ValueError, match='num_outputs'):
        vgg(VGG11, 0)


def test_parse_arch():
    assert parse_arch('VGG16') == (VGG16, False)
    with pytest.raises(ValueError, match="unknown architecture 'vgg12'.*vgg11"):
        parse_arch('vgg12')


def test_min_input_size_and_check():
    assert min_input_size(VGG11) == 32
    assert check_conv_arch([[1, 2], (3, 4)]) == ((1, 2), (3, 4))
    net = vgg(narrow(VGG11, 16), 10)
    net.initialize()
    assert net(nd.zeros((1, 1, 32, 32))).shape == (1, 10)


def test_alexnet_shapes_match_the_book():
    from vgg.model import alexnet
    net = alexnet(10)
    net.initialize()
    X = nd.zeros((1, 1, 224, 224))
    shapes = []
    for layer in net:
        X = layer(X)
        shapes.append(X.shape)
    assert shapes[:8] == [(1, 96, 54, 54), (1, 96, 26, 26), (1, 256, 26, 26), (1, 256, 12, 12),
                          (1, 384, 12, 12), (1, 384, 12, 12), (1, 256, 12, 12), (1, 256, 5, 5)]
    assert shapes[-1] == (1, 10)
    assert sum(int(np.prod(p.shape)) for p in net.collect_params().values()) == 46_764_746


def test_build_net_knows_every_shape_at_once():
    net = build_net('vgg11', 16, 32, num_outputs=7, channels=3)
    shapes = {name: p.shape for name, p in net.collect_params().items()}
    assert all(0 not in shape for shape in shapes.values())
    first_conv = [s for n, s in shapes.items() if n.endswith('weight')][0]
    assert first_conv == (4, 3, 3, 3)  # 64 / 16 channels over 3 input channels
    assert net(nd.zeros((2, 3, 32, 32))).shape == (2, 7)


@pytest.mark.parametrize('arch, ratio, resize, message', [
    ('vgg12', 4, 224, "unknown architecture 'vgg12'; choose one of vgg11, vgg13, vgg16, vgg19"),
    ('vgg11', 4, 16, 'resize 16 is too small: 5 pooling blocks need at least 32 pixels'),
    ('vgg11', 128, 224, 'ratio'),
])
def test_build_net_rejects_bad_settings(arch, ratio, resize, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_net(arch, ratio, resize)


def test_check_resize_accepts_the_smallest_size_that_survives_pooling():
    check_resize(VGG11, 32)
    with pytest.raises(ValueError, match='resize 31 is too small'):
        check_resize(VGG11, 31)


def test_batch_norm_block_puts_batch_norm_between_convolution_and_relu():
    layers = list(vgg_block(2, 8, batch_norm=True))
    assert [type(l) for l in layers] == [nn.Conv2D, nn.BatchNorm, nn.Activation] * 2 + [
        nn.MaxPool2D]
    assert all(conv.act is None for conv in layers[0:6:3])
    assert all(act._act_type == 'relu' for act in layers[2:6:3])
    X = nd.random.uniform(shape=(2, 3, 16, 16))
    blk = vgg_block(2, 8, batch_norm=True)
    blk.initialize()
    assert blk(X).shape == (2, 8, 8, 8)


def trainable_count(net, input_shape):
    symbol = net(mx.sym.var('data'))
    shapes = symbol.infer_shape(data=input_shape)[0]
    return sum(int(np.prod(s)) for name, s in zip(symbol.list_arguments(), shapes)
               if name != 'data')


@pytest.mark.parametrize('name,expected', [('vgg11_bn', 132_868_840), ('vgg13_bn', 133_053_736),
                                           ('vgg16_bn', 138_365_992), ('vgg19_bn', 143_678_248)])
def test_batch_norm_networks_have_the_model_zoos_parameter_counts(name, expected):
    from mxnet.gluon.model_zoo.vision import get_vgg
    conv_arch, batch_norm = parse_arch(name)
    assert batch_norm and conv_arch == parse_arch(name[:-3])[0]
    ours = trainable_count(vgg(conv_arch, 1000, batch_norm=True), (1, 3, 224, 224))
    zoo = trainable_count(get_vgg(int(name[3:5]), batch_norm=True), (1, 3, 224, 224))
    assert ours == zoo == expected


def test_every_architecture_name_builds_and_unknown_names_list_them_all():
    for name in ARCH_NAMES:
        assert build_net(name, 16, 32)(nd.zeros((1, 1, 32, 32))).shape == (1, 10)
    with pytest.raises(ValueError, match='choose one of vgg11, .*, vgg19_bn'):
        build_net('vgg11bn', 16, 32)


def test_msra_initialisation_has_hes_scale():
    net = build_net('vgg11', 1, 32, initializer='msra')
    weight = list(net)[3][0].weight.data().asnumpy()  # 3x3 conv with 256 inputs
    fan_in = weight.shape[1] * 9
    assert weight.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.05)
    with pytest.raises(ValueError, match="unknown initializer 'he'"):
        build_net('vgg11', 16, 32, initializer='he')


@pytest.mark.parametrize('kwargs, what', [
    ({'arch': 'vgg11', 'ratio': 0.001, 'resize': 224}, "block 1's convolution weight"),
    ({'arch': 'vgg11', 'ratio': 0.25, 'resize': 3000}, "block 1's output"),
    ({'arch': 'vgg11', 'ratio': 4, 'resize': 50000}, 'the input batch'),
    ({'arch': 'vgg11', 'ratio': 16, 'resize': 32, 'num_outputs': 10 ** 6}, 'the output weight'),
    ({'arch': 'vgg11', 'ratio': 0.01, 'resize': 32}, "block 3's convolution weight"),
    ({'arch': 'vgg11', 'ratio': 1, 'resize': 1100}, 'the first dense weight'),
])
def test_sizes_beyond_mxnets_limit_are_refused_before_anything_is_built(kwargs, what):
    with pytest.raises(ValueError, match=f"{re.escape(what)} would hold [0-9,]+ elements, more "
                       "than MXNet's limit"):
        build_net(**kwargs)


def test_the_batch_counts_towards_the_limit():
    from vgg.config import RunConfig
    with pytest.raises(ValueError, match="block 1's output would hold"):
        RunConfig(ratio=0.25, batch_size=4096)


def test_layers_go_through_nested_sequentials_but_not_into_other_blocks():
    class Residual(nn.HybridSequential):
        def hybrid_forward(self, F, x):
            return x + super().hybrid_forward(F, x)

    inner, residual, outer = nn.HybridSequential(), Residual(), nn.Sequential()
    dense, conv, pool, flat = nn.Dense(2), nn.Conv2D(2, 1), nn.MaxPool2D(), nn.Flatten()
    inner.add(conv, pool)
    residual.add(nn.Dense(3))
    outer.add(inner, residual, flat)
    net = nn.Sequential()
    net.add(outer, dense)
    assert layers(net) == [conv, pool, residual, flat, dense]
    assert layers(dense) == [dense]
