"""Starting from trained weights: a shallower VGG (init_from) and MXNet's model zoo, offline."""
import glob
import socket

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon.model_zoo.vision import get_vgg

from vgg.model import build_net
from vgg.transfer import from_model_zoo, init_from

SIZE = 32  # the zoo's dense layers take their input size from the images: small is quick


def zoo_network(batch_norm):
    mx.random.seed(1)
    zoo = get_vgg(11, batch_norm=batch_norm)
    zoo.initialize(mx.init.Xavier())
    zoo(nd.zeros((1, 3, SIZE, SIZE)))
    if batch_norm:  # running statistics that are not the initial ones, so they must be copied
        for name, param in zoo.collect_params('.*running.*').items():
            param.set_data(nd.random.uniform(0.5, 1.5, shape=param.shape))
    return zoo


@pytest.fixture(scope='module', params=[False, True], ids=['vgg11', 'vgg11_bn'])
def zoo_files(request, tmp_path_factory):
    """A zoo network and its weights saved in both of MXNet's naming styles."""
    directory = tmp_path_factory.mktemp('zoo')
    zoo = zoo_network(request.param)
    files = {'structure': str(directory / 'structural.params'),
             'prefix': str(directory / 'prefixed.params')}
    zoo.save_parameters(files['structure'])          # features.0.weight, ...
    zoo.collect_params().save(files['prefix'])       # vgg0_conv0_weight, ...
    return ('vgg11_bn' if request.param else 'vgg11'), zoo, files


@pytest.mark.parametrize('style', ['structure', 'prefix'])
def test_zoo_weights_give_the_zoo_networks_outputs(zoo_files, style):
    name, zoo, files = zoo_files
    net = from_model_zoo(name, files[style], resize=SIZE)
    X = nd.random.uniform(shape=(2, 3, SIZE, SIZE))
    np.testing.assert_allclose(net(X).asnumpy(), zoo(X).asnumpy(), rtol=1e-5, atol=1e-6)
    assert name.endswith('_bn') == any('batchnorm' in key for key in net.collect_params())


def test_grey_fold_equals_the_zoo_on_the_image_repeated(zoo_files):
    name, zoo, files = zoo_files
    grey = from_model_zoo(name, files['structure'], resize=SIZE, channels=1)
    X = nd.random.uniform(shape=(2, 1, SIZE, SIZE))
    np.testing.assert_allclose(grey(X).asnumpy(), zoo(nd.concat(X, X, X, dim=1)).asnumpy(),
                               rtol=1e-4, atol=1e-5)


def test_a_new_head_for_other_classes_keeps_the_features(zoo_files):
    name, zoo, files = zoo_files
    net = from_model_zoo(name, files['prefix'], resize=SIZE, num_outputs=10)
    X = nd.random.uniform(shape=(2, 3, SIZE, SIZE))
    assert net(X).shape == (2, 10)
    features = X
    for layer in list(net)[:-1]:
        features = layer(features)
    np.testing.assert_allclose(features.asnumpy(), zoo.features(X).asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_wrong_or_broken_files_are_refused(zoo_files, tmp_path):
    name, _, files = zoo_files
    other = 'vgg13_bn' if name.endswith('_bn') else 'vgg13'
    with pytest.raises(ValueError, match=f'does not hold the weights of {other}'):
        from_model_zoo(other, files['structure'], resize=SIZE)
    broken = tmp_path / 'broken.params'
    broken.write_bytes(open(files['structure'], 'rb').read()[:1000])
    with pytest.raises(ValueError, match='not an MXNet parameter file'):
        from_model_zoo(name, str(broken), resize=SIZE)
    with pytest.raises(ValueError, match='not found'):
        from_model_zoo(name, str(tmp_path / 'missing.params'))
    with pytest.raises(ValueError, match='images of 224 pixels'):
        from_model_zoo(name, files['structure'], resize=64)


def test_model_store_unreachable_says_which_file_to_put_where(tmp_path, monkeypatch, capsys):
    # A port on this machine that nothing listens on: the download fails at once.
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv('MXNET_GLUON_REPO', f'http://127.0.0.1:{port}/')
    root = tmp_path / 'models'
    with pytest.raises(ValueError, match=r"vgg11's weights are not in MXNet's model store .* "
                       rf"put {root}/vgg11-[0-9a-f]{{8}}\.params there"):
        from_model_zoo('vgg11', root=str(root))
    assert glob.glob(str(root / '*')) == []  # no partial download left behind


def test_init_from_copies_the_papers_layers_where_shapes_match():
    shallow, deep = build_net('vgg11', 4, 96), build_net('vgg16', 4, 96)
    copied = init_from(deep, shallow)
    # VGG-16's first four convolutions: block 1 (2) and block 2 (2); VGG-11 has one conv in
    # each of these blocks, of the same shape as the first of VGG-16's.
    blocks = list(deep)
    assert copied == [blocks[0][0].name, blocks[1][0].name] + [
        layer.name for layer in blocks if isinstance(layer, mx.gluon.nn.Dense)]
    for ours, theirs in ((blocks[0][0], list(shallow)[0][0]), (blocks[1][0], list(shallow)[1][0]),
                         (blocks[-1], list(shallow)[-1])):
        np.testing.assert_array_equal(ours.weight.data().asnumpy(), theirs.weight.data().asnumpy())
    # The second convolution of block 1 had nothing to copy: still its own draw.
    assert not np.array_equal(blocks[0][1].weight.data().asnumpy()[:, :1],
                              list(shallow)[0][0].weight.data().asnumpy())


def test_init_from_refuses_when_nothing_fits():
    other = mx.gluon.nn.HybridSequential()
    other.add(mx.gluon.nn.Conv2D(3, kernel_size=3), mx.gluon.nn.Dense(7))
    other.initialize()
    other(nd.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match='no layer of the trained network fits'):
        init_from(build_net('vgg11', 16, 32), other)
