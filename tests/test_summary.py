"""vgg.summary (vgg/summaries.py) against hand-computed parameter, MAC and memory counts."""
import json
import os
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from helpers import summary_as_dict
from vgg.model import VGG11, narrow, vgg, vgg_block
from vgg.summaries import measure_step, summary

FLOAT32 = 4
# Where measure_step can measure a CPU step's peak memory: Linux, whose peak-RSS mark it resets.
PEAK_RSS_RESETTABLE = sys.platform.startswith('linux') and os.access('/proc/self/clear_refs',
                                                                     os.W_OK)


def leaf_names(block):
    """Gluon names of the leaf layers in forward order (the counters are process-wide,
    so names such as conv0 cannot be hard-coded)."""
    if isinstance(block, (nn.Sequential, nn.HybridSequential)):
        return [name for index in range(len(block)) for name in leaf_names(block[index])]
    return [block.name]


def conv_macs(out_hw, out_c, in_c, k, groups=1):
    return out_hw * out_hw * out_c * (in_c // groups) * k * k


@pytest.fixture(scope='module')
def small_vgg():
    """The chapter's ratio-4 VGG-11 with 10 outputs, and its summary at (1, 1, 224, 224)."""
    net = vgg(narrow(VGG11, 4), 10)
    return net, summary(net, (1, 1, 224, 224))


def test_vgg11_total_params():
    # The heavy one (133M parameters): the paper's configuration A with 1000 classes.
    net = vgg(VGG11, 1000)
    result = summary(net, (1, 3, 224, 224))
    assert result.total_params == 132_863_336
    assert result.param_bytes == 132_863_336 * FLOAT32


def test_small_vgg_macs_match_hand_count(small_vgg):
    _, result = small_vgg
    expected = [
        conv_macs(224, 16, 1, 3), 0,                               # block 1
        conv_macs(112, 32, 16, 3), 0,                              # block 2
        conv_macs(56, 64, 32, 3), conv_macs(56, 64, 64, 3), 0,     # block 3
        conv_macs(28, 128, 64, 3), conv_macs(28, 128, 128, 3), 0,  # block 4
        conv_macs(14, 128, 128, 3), conv_macs(14, 128, 128, 3), 0,  # block 5
        128 * 7 * 7 * 4096, 0, 4096 * 4096, 0, 4096 * 10,         # classifier
    ]
    assert [row.macs for row in result.rows] == expected
    assert result.total_macs == sum(expected) == 512_155_648


def test_small_vgg_shapes_and_types(small_vgg):
    net, result = small_vgg
    assert [row.name for row in result.rows] == leaf_names(net)
    pools = [row.output_shape for row in result.rows if row.layer_type == 'MaxPool2D']
    assert pools == [(1, 16, 112, 112), (1, 32, 56, 56), (1, 64, 28, 28),
                     (1, 128, 14, 14), (1, 128, 7, 7)]
    assert result.rows[0].output_shape == (1, 16, 224, 224)
    assert result.rows[-1].output_shape == (1, 10)
    assert [row.layer_type for row in result.rows[-5:]] == [
        'Dense', 'Dropout', 'Dense', 'Dropout', 'Dense']


def test_small_vgg_params_and_memory(small_vgg):
    _, result = small_vgg
    assert result.rows[0].params == 16 * 1 * 9 + 16
    assert result.rows[0].activation_bytes == 16 * 224 * 224 * FLOAT32
    assert sum(row.params for row in result.rows) == result.total_params
    assert result.param_bytes == result.total_params * FLOAT32
    assert result.total_activation_bytes == sum(
        int(np.prod(row.output_shape)) * FLOAT32 for row in result.rows)
    assert all(row.params == 0 for row in result.rows if row.layer_type != 'Conv2D'
               and row.layer_type != 'Dense')


def test_text_table(small_vgg):
    _, result = small_vgg
    text = result.to_text()
    assert str(result) == text
    for row in result.rows:
        assert row.name in text
    total_lines = [line for line in text.splitlines() if line.startswith('Total')]
    assert len(total_lines) == 1
    assert f'{result.total_params:,}' in total_lines[0]
    assert f'{result.total_macs:,}' in total_lines[0]
    # Every row line of the table has the same width as the header: the columns line up.
    header = next(line for line in text.splitlines() if line.startswith('Layer'))
    assert header.split() == ['Layer', 'Type', 'Output', 'shape', 'Params', 'MACs',
                              'Act.', 'mem', '(MB)']
    row_lines = [line for line in text.splitlines()
                 if line.split() and line.split()[0] in {row.name for row in result.rows}]
    assert len({len(line) for line in row_lines + [header]}) == 1


def test_a_summary_is_json(small_vgg):
    _, result = small_vgg
    whole = json.loads(json.dumps(summary_as_dict(result)))
    dicts = whole['rows']
    assert len(dicts) == len(result.rows)
    assert dicts[0]['output_shape'] == [1, 16, 224, 224]
    assert set(dicts[0]) == {'name', 'layer_type', 'output_shape', 'params', 'macs',
                             'activation_bytes'}
    assert whole == {'input_shape': [1, 1, 224, 224], 'rows': dicts,
                     'total_params': result.total_params, 'total_macs': 512_155_648,
                     'total_activation_bytes': result.total_activation_bytes,
                     'param_bytes': result.total_params * FLOAT32}
    # Each dict is its row: the rows' fields, the shape as a list.
    assert dicts == [dict(vars(row), output_shape=list(row.output_shape)) for row in result.rows]


def tiny_alexnet():
    """AlexNet's layer pattern with plain nn.Sequential (nested), narrow enough to be cheap."""
    features = nn.Sequential()
    features.add(nn.Conv2D(8, kernel_size=11, strides=4, activation='relu'),
                 nn.MaxPool2D(pool_size=3, strides=2),
                 nn.Conv2D(16, kernel_size=5, padding=2, groups=2, activation='relu'),
                 nn.MaxPool2D(pool_size=3, strides=2),
                 nn.Conv2D(24, kernel_size=3, padding=1, activation='relu'),
                 nn.MaxPool2D(pool_size=3, strides=2))
    net = nn.Sequential()
    net.add(features, nn.Flatten(), nn.Dense(64, activation='relu'), nn.Dropout(0.5),
            nn.Dense(10))
    return net


def test_alexnet_style_sequential():
    net = tiny_alexnet()
    result = summary(net, (2, 1, 224, 224))
    assert [row.layer_type for row in result.rows] == [
        'Conv2D', 'MaxPool2D', 'Conv2D', 'MaxPool2D', 'Conv2D', 'MaxPool2D',
        'Flatten', 'Dense', 'Dropout', 'Dense']
    assert [row.output_shape for row in result.rows] == [
        (2, 8, 54, 54), (2, 8, 26, 26), (2, 16, 26, 26), (2, 16, 12, 12), (2, 24, 12, 12),
        (2, 24, 5, 5), (2, 600), (2, 64), (2, 64), (2, 10)]
    # MACs are per example even though the batch is 2; the grouped conv sees in_c / 2.
    assert [row.macs for row in result.rows] == [
        conv_macs(54, 8, 1, 11), 0, conv_macs(26, 16, 8, 5, groups=2), 0,
        conv_macs(12, 24, 16, 3), 0, 0, 600 * 64, 0, 64 * 10]
    assert [row.params for row in result.rows] == [
        8 * 121 + 8, 0, 16 * 4 * 25 + 16, 0, 24 * 16 * 9 + 24, 0, 0, 600 * 64 + 64, 0, 650]
    # Activation memory is for the whole batch.
    assert result.rows[0].activation_bytes == 2 * 8 * 54 * 54 * FLOAT32
    assert result.rows[6].activation_bytes == 2 * 600 * FLOAT32


def test_initialises_uninitialised_net_and_keeps_existing_weights():
    net = tiny_alexnet()
    with pytest.raises(RuntimeError):
        net[0][0].weight.list_ctx()
    summary(net, (1, 1, 224, 224))
    weight = net[0][0].weight.data().asnumpy().copy()  # initialised by summary
    summary(net, (1, 1, 224, 224))
    np.testing.assert_array_equal(net[0][0].weight.data().asnumpy(), weight)


def test_explicit_ctx():
    net = tiny_alexnet()
    net.initialize(ctx=mx.cpu(0))
    result = summary(net, (1, 1, 224, 224), ctx=mx.cpu(0))
    assert result.rows[-1].output_shape == (1, 10)


@pytest.mark.parametrize('hybridize', [False, True])
def test_hybridize_state_is_kept(hybridize):
    net = nn.HybridSequential()
    net.add(vgg_block(1, 4), vgg_block(1, 8), nn.Dense(3))
    net.initialize()
    if hybridize:
        net.hybridize()
    blocks = [net] + [net[i] for i in range(len(net))] + [net[0][0], net[0][1]]
    before = [blk._active for blk in blocks]
    x = mx.nd.ones((1, 1, 16, 16))
    expected = net(x).asnumpy()
    result = summary(net, (1, 1, 16, 16))
    assert [blk._active for blk in blocks] == before == [hybridize] * len(blocks)
    assert result.rows[-1].output_shape == (1, 3)
    np.testing.assert_allclose(net(x).asnumpy(), expected)


@pytest.mark.parametrize('shape', [(), (1, 0, 4, 4), (1, -1), (1.0, 2), 'abc', None])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError):
        summary(nn.Dense(2), shape)


def test_measure_step_times_forward_and_backward():
    net = vgg(narrow(VGG11, 16), 10)
    net.initialize()
    net(mx.nd.zeros((2, 1, 32, 32)))  # the shapes: no gradient yet
    weights = [p for name, p in net.collect_params().items() if name.endswith('weight')]
    assert all(p.grad().abs().sum().asscalar() == 0 for p in weights)
    result = measure_step(net, (2, 1, 32, 32), repeat=2)
    assert set(result) == {'seconds', 'peak_bytes'}
    assert 0 < result['seconds'] < 60
    # The step ran backward: every weight has a gradient now.
    assert all(p.grad().abs().sum().asscalar() > 0 for p in weights)
    # None only where Linux's peak-RSS mark cannot be reset (not Linux, or no /proc).
    if PEAK_RSS_RESETTABLE:
        assert isinstance(result['peak_bytes'], int) and result['peak_bytes'] >= 0
    else:
        assert result['peak_bytes'] is None
    with pytest.raises(ValueError, match='input_shape'):
        measure_step(net, (2, 0, 32, 32))


# A fresh process: VGG-11 (ratio 16, 32x32) at batch 2, then 16; prints [[peak, activations], ...].
PEAK_SCRIPT = """
import json
import vgg
from vgg.model import VGG11, narrow, vgg as vgg_net
from vgg.summaries import measure_step, summary
measured = []
for batch in (2, 16):
    net = vgg_net(narrow(VGG11, 16), 10)
    net.initialize()
    shape = (batch, 1, 32, 32)
    peak = measure_step(net, shape, repeat=1)['peak_bytes']
    measured.append([peak, summary(net, shape).total_activation_bytes])
print(json.dumps(measured))
"""


@pytest.mark.slow
@pytest.mark.skipif(not PEAK_RSS_RESETTABLE, reason="needs Linux's /proc/self/clear_refs")
def test_measure_step_peak_holds_the_activations_in_a_fresh_process():
    """The step's peak memory growth is at least the activations it keeps for backward, and
    grows with the batch.  In a fresh process only: in one that has freed memory before,
    the step can reuse it without the resident memory growing (see the report on peak_bytes)."""
    result = subprocess.run([sys.executable, '-c', PEAK_SCRIPT], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    (small_peak, small_acts), (large_peak, large_acts) = json.loads(result.stdout.splitlines()[-1])
    assert small_peak >= small_acts and large_peak >= large_acts, result.stdout
    assert large_peak > small_peak


@pytest.mark.parametrize('shape, layer, match', [
    ((1, 1, 8, 8), 'MaxPool2D', r'cannot take an input of shape \(1, 32, 1, 1\): .*kernel size '
                                r'\(2\) exceeds input'),
    ((1, 784), 'Conv2D', r'cannot take an input of shape \(1, 784\): .*should be 4D'),
    ((1, 3, 32, 32), 'Conv2D', r'cannot take an input of shape \(1, 3, 32, 32\): Shape '
                               r'inconsistent'),
])
def test_a_shape_the_network_cannot_take_is_one_value_error_naming_the_layer(shape, layer, match):
    net = vgg(narrow(VGG11, 16), 10)
    net.initialize()
    net(mx.nd.zeros((1, 1, 32, 32)))  # built for 32x32 grey images
    with pytest.raises(ValueError, match=rf'^input_shape {re.escape(str(shape))} does not fit '
                       rf'the network: \w+ \({layer}\) {match}') as info:
        summary(net, shape)
    assert '\n' not in str(info.value) and 'Traceback' not in str(info.value)
    with pytest.raises(ValueError, match=rf'^input_shape {re.escape(str(shape))} does not fit'):
        measure_step(net, shape)
