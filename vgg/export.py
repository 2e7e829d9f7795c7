"""Exporting a trained network: MXNet symbol + parameters, and ONNX; each export is checked.

The symbol export (``HybridBlock.export``) loads back with
``mxnet.gluon.SymbolBlock.imports(json, ['data'], params)``.  The ONNX export
goes through MXNet 1.9.1's own exporter, ``mx.onnx.export_model``, which needs
``onnx.mapping``: onnx 1.18 is the newest release that has it.  Both exports
take any batch size; their logits are compared with the Gluon network's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Dict

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from .base import atomic_write, check_positive, mxnet_message
from .model import CHANNELS

STEM = 'vgg'
INPUT = 'data'  # the input's name in the symbol file and the ONNX graph
_CHECK_BATCH = 4
_RTOL, _ATOL = 1e-4, 1e-5


def _probe(net: gluon.HybridBlock, resize: int) -> nd.NDArray:
    # Inputs in the data's range, [0, 1], from a fixed seed so that checks repeat exactly.
    rng = np.random.RandomState(0)
    return nd.array(rng.uniform(size=(_CHECK_BATCH, CHANNELS, resize, resize)), dtype='float32')


def _check_close(name: str, expected: np.ndarray, actual: np.ndarray) -> float:
    difference = float(np.abs(expected - actual).max())
    if not np.allclose(actual, expected, rtol=_RTOL, atol=_ATOL):
        raise ValueError(f'the {name} export gives other logits than the network '
                         f'(max difference {difference:.3g})')
    return difference


def export_symbol(net: gluon.HybridBlock, resize: int, directory: str) -> Dict[str, object]:
    """Write ``vgg-symbol.json`` and ``vgg-0000.params`` into ``directory`` and check them.

    Returns
    -------
    dict
        ``symbol`` and ``params`` (paths) and ``max_difference``, the largest
        absolute logit difference between the reloaded SymbolBlock and ``net``.

    Raises
    ------
    ValueError
        If ``resize`` is not a positive integer or not an input size that ``net``
        takes (then nothing is written), or the reloaded network's logits differ
        from ``net``'s.
    """
    x = _probe(net, check_positive('resize', resize, int))
    net.hybridize()
    try:
        expected = net(x).asnumpy()
    except mx.base.MXNetError as err:
        raise ValueError(f'resize {resize} does not fit the network (an input of shape '
                         f'{x.shape}): {mxnet_message(err)}') from None
    os.makedirs(directory, exist_ok=True)
    paths = {'symbol': os.path.join(directory, f'{STEM}-symbol.json'),
             'params': os.path.join(directory, f'{STEM}-0000.params')}
    # HybridBlock.export names its files itself: export into a scratch folder
    # beside the targets, then move each file into place atomically.
    scratch = tempfile.mkdtemp(prefix='.export-', dir=directory)
    try:
        net.export(os.path.join(scratch, STEM), 0)
        for path in paths.values():
            atomic_write(path, lambda tmp: os.replace(
                os.path.join(scratch, os.path.basename(path)), tmp))
    finally:
        shutil.rmtree(scratch)
    with warnings.catch_warnings():
        # SymbolBlock.imports warns that it cannot infer the input's type: float32, as given.
        warnings.simplefilter('ignore', UserWarning)
        reloaded = gluon.SymbolBlock.imports(paths['symbol'], [INPUT], paths['params'])
    actual = reloaded(x).asnumpy()
    return dict(paths, max_difference=_check_close('symbol', expected, actual))


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ValueError(f'ONNX export needs the onnx and onnxruntime packages ({err}); '
                         'pip install onnx==1.18.0 onnxruntime') from None
    try:
        from onnx import mapping  # noqa: F401  (what MXNet 1.9.1's exporter imports)
    except ImportError:
        raise ValueError(f'MXNet 1.9.1 cannot export to onnx {onnx.__version__}: its exporter '
                         'needs onnx.mapping, which onnx 1.19 removed; '
                         'pip install onnx==1.18.0') from None
    import mxnet.onnx
    return onnx, onnxruntime, mxnet.onnx


def export_onnx(symbol: str, params: str, expected_net: gluon.HybridBlock, resize: int,
                path: str) -> Dict[str, object]:
    """Convert a symbol export to ONNX (any batch size) at ``path`` and check it with onnxruntime.

    Parameters
    ----------
    symbol, params : str
        The files written by :func:`export_symbol`.
    expected_net : mxnet.gluon.HybridBlock
        The network whose logits the ONNX model must reproduce.
    resize : int
        The input's height and width.
    path : str
        The ``.onnx`` file to write.

    Returns
    -------
    dict
        ``onnx`` (the path), ``opset``, ``onnx_version``, ``onnxruntime_version`` and
        ``max_difference`` (largest absolute logit difference to ``expected_net``).

    Raises
    ------
    ValueError
        If onnx or onnxruntime is missing or unsuitable, or the logits differ.
    """
    onnx, onnxruntime, mx_onnx = _onnx_modules()
    shape = (_CHECK_BATCH, CHANNELS, resize, resize)

    def convert(tmp: str) -> None:
        mx_onnx.export_model(symbol, params, [shape], np.float32, tmp, dynamic=True,
                             dynamic_input_shapes=[(None,) + shape[1:]])
        # MXNet lists every weight as a graph input too; onnxruntime then cannot
        # treat them as constants (and warns once per weight).  Keep only the data.
        model = onnx.load(tmp)
        weights = {tensor.name for tensor in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        onnx.checker.check_model(model)
        onnx.save(model, tmp)

    atomic_write(path, convert)
    x = _probe(expected_net, resize)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    actual = session.run(None, {INPUT: x.asnumpy()})[0]
    expected = expected_net(x.as_in_context(mx.cpu())).asnumpy()
    opset = max(o.version for o in onnx.load(path).opset_import if o.domain in ('', 'ai.onnx'))
    return {'onnx': path, 'opset': opset, 'onnx_version': onnx.__version__,
            'onnxruntime_version': onnxruntime.__version__,
            'max_difference': _check_close('ONNX', expected, actual)}
