"""``vgg export``: MXNet symbol + parameters and ONNX give the trained network's logits."""
import sys
import types
import warnings

import numpy as np
import onnxruntime
import pytest
from mxnet import gluon, nd

from helpers import make_run, run_cli
from vgg.experiment import load_net
from vgg.export import _onnx_modules


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp('export') / 'run', done=2)
    result = run_cli('export', run.path)
    assert result.returncode == 0, result.stderr
    return run, result.stdout


def inputs(batch):
    return np.random.RandomState(batch).uniform(size=(batch, 1, 32, 32)).astype(np.float32)


@pytest.mark.slow
def test_export_prints_what_it_wrote_and_checked(exported):
    run, stdout = exported
    symbol, onnx = stdout.splitlines()
    assert symbol.startswith(f'symbol: {run.file("export", "vgg-symbol.json")} '
                             f'{run.file("export", "vgg-0000.params")} (reloaded with')
    assert onnx.startswith(f'onnx: {run.file("export", "vgg.onnx")} (opset ')


@pytest.mark.slow
@pytest.mark.parametrize('batch', [1, 3])
def test_symbol_export_loads_with_symbolblock_imports(exported, batch):
    run, _ = exported
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        reloaded = gluon.SymbolBlock.imports(run.file('export', 'vgg-symbol.json'), ['data'],
                                             run.file('export', 'vgg-0000.params'))
    x = nd.array(inputs(batch))
    np.testing.assert_array_equal(reloaded(x).asnumpy(), load_net(run.path)(x).asnumpy())


@pytest.mark.slow
@pytest.mark.parametrize('batch', [1, 3])
def test_onnx_export_gives_the_same_logits_in_onnxruntime(exported, batch):
    run, _ = exported
    session = onnxruntime.InferenceSession(run.file('export', 'vgg.onnx'),
                                           providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['data']  # the weights are not inputs
    logits = session.run(None, {'data': inputs(batch)})[0]
    expected = load_net(run.path)(nd.array(inputs(batch))).asnumpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_missing_onnx_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)
    with pytest.raises(ValueError, match=r'ONNX export needs the onnx and onnxruntime packages'):
        _onnx_modules()


def test_an_onnx_without_mapping_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', types.ModuleType('onnx'))
    monkeypatch.setattr(sys.modules['onnx'], '__version__', '1.19.0', raising=False)
    monkeypatch.delitem(sys.modules, 'onnx.mapping', raising=False)  # onnx 1.19 has none
    with pytest.raises(ValueError, match=r'cannot export to onnx 1\.19\.0: .* onnx==1\.18\.0'):
        _onnx_modules()


def test_a_batch_norm_network_exports_to_symbol_and_onnx(tmp_path):
    from vgg.export import export_onnx, export_symbol
    from vgg.model import build_net
    net = build_net('vgg11_bn', 16, 32)
    for name, param in net.collect_params('.*running.*').items():  # statistics to be exported
        param.set_data(nd.random.uniform(0.5, 1.5, shape=param.shape))
    symbol = export_symbol(net, 32, str(tmp_path))
    onnx = export_onnx(symbol['symbol'], symbol['params'], net, 32, str(tmp_path / 'vgg.onnx'))
    assert symbol['max_difference'] < 1e-5 and onnx['max_difference'] < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / 'vgg.onnx'),
                                           providers=['CPUExecutionProvider'])
    logits = session.run(None, {'data': inputs(2)})[0]
    np.testing.assert_allclose(logits, net(nd.array(inputs(2))).asnumpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('resize, match', [
    (8, r'^resize 8 does not fit the network \(an input of shape \(4, 1, 8, 8\)\): .*kernel '
        r'size \(2\) exceeds input'),
    (64, r'^resize 64 does not fit the network \(an input of shape \(4, 1, 64, 64\)\): .*Shape '
         r'inconsistent'),
    (0, r'^resize must be positive, got 0$'),
    (2.5, r'^resize must be an integer, got 2\.5$'),
    ('32', r"^resize must be an integer, got '32'$"),
])
def test_a_resize_the_network_cannot_take_is_one_value_error_and_writes_nothing(
        tmp_path, resize, match):
    from vgg.export import export_symbol
    from vgg.model import build_net
    net = build_net('vgg11', 16, 32)  # takes 32x32 images
    with pytest.raises(ValueError, match=match) as info:
        export_symbol(net, resize, str(tmp_path / 'export'))
    assert '\n' not in str(info.value)
    assert not (tmp_path / 'export').exists()
