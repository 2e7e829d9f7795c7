"""Layer-by-layer summary of a sequential Gluon network: shapes, parameters, MACs, memory.

The chapter reasons about VGG's cost block by block (where the parameters sit,
where the compute goes); :func:`summary` puts numbers on that for any network
built from nested ``nn.Sequential`` / ``nn.HybridSequential`` containers, such
as :func:`vgg.vgg` or the book's AlexNet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block, nn

from .base import check_positive, mxnet_message
from .model import layers

__all__ = ['LayerRow', 'Summary', 'summary']

# Decimal megabytes, so that the table's figures can be checked by hand.
_BYTES_PER_MB = 10 ** 6

_CONV_TYPES = (nn.Conv1D, nn.Conv2D, nn.Conv3D)
_CONV_TRANSPOSE_TYPES = (nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)


@dataclass
class LayerRow:
    """What one leaf layer produces and costs.

    Attributes
    ----------
    name : str
        Gluon's block name, e.g. ``'conv0'``, ``'pool0'``, ``'dense0'``.
    layer_type : str
        The block's class name, e.g. ``'Conv2D'``.
    output_shape : tuple of int
        Shape of the layer's output, batch axis included.
    params : int
        Number of trainable parameter elements (weights and biases) of the layer.
    macs : int
        Multiply-accumulates per example for convolutions and ``Dense`` layers;
        0 for every other layer (pooling, activation, dropout, flatten, ...).
    activation_bytes : int
        Bytes of the layer's output for the whole batch.
    """

    name: str
    layer_type: str
    output_shape: Tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int


@dataclass
class Summary:
    """The result of :func:`summary`: one :class:`LayerRow` per leaf layer, plus totals.

    Attributes
    ----------
    input_shape : tuple of int
        The input shape the forward pass was run with.
    rows : list of LayerRow
        The leaf layers in forward order.
    total_params : int
        Trainable parameter elements, each shared parameter counted once.
    total_macs : int
        Sum of the rows' MACs (per example).
    total_activation_bytes : int
        Sum of the rows' output bytes for the batch.  This is what a training step
        keeps for the backward pass, not the peak of an inference-only pass.
    param_bytes : int
        Bytes of all the layers' parameters (non-trainable ones such as
        BatchNorm's running statistics included), each shared parameter once.
    """

    input_shape: Tuple[int, ...]
    rows: List[LayerRow] = field(default_factory=list)
    total_params: int = 0
    total_macs: int = 0
    total_activation_bytes: int = 0
    param_bytes: int = 0

    def to_text(self) -> str:
        """Render the summary as an aligned plain-text table with a totals line.

        Returns
        -------
        str
            Columns: layer, type, output shape, params, MACs (per example) and
            activation memory in MB (10**6 bytes, whole batch); then totals and
            the parameter memory.
        """
        header = ('Layer', 'Type', 'Output shape', 'Params', 'MACs', 'Act. mem (MB)')
        body = [(row.name, row.layer_type, _format_shape(row.output_shape), f'{row.params:,}',
                 f'{row.macs:,}', _format_mb(row.activation_bytes)) for row in self.rows]
        totals = ('Total', '', '', f'{self.total_params:,}', f'{self.total_macs:,}',
                  _format_mb(self.total_activation_bytes))
        widths = [max(len(line[i]) for line in [header, totals] + body) for i in range(len(header))]
        # Names and types read best left-aligned, numbers right-aligned.
        left = (True, True, True, False, False, False)

        def render(cells: Sequence[str]) -> str:
            return '  '.join(cell.ljust(width) if is_left else cell.rjust(width)
                             for cell, width, is_left in zip(cells, widths, left)).rstrip()

        rule = '-' * len(render(header))
        lines = [f'Input shape: {_format_shape(self.input_shape)} '
                 '(MACs per example, activation memory for the whole batch)',
                 rule, render(header), rule]
        lines += [render(cells) for cells in body]
        lines += [rule, render(totals),
                  f'Parameter memory: {_format_mb(self.param_bytes)} MB', rule]
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.to_text()


def summary(net: Block, input_shape: Sequence[int], ctx: Optional[mx.Context] = None) -> Summary:
    """Run one forward pass through ``net``'s leaf layers and tabulate what each one does.

    ``net`` must be a leaf layer or a (nested) ``nn.Sequential`` /
    ``nn.HybridSequential``: the leaves are fed one after another, in the order
    the containers hold them, which is exactly what those containers' forward
    does.  Any other block that has children is treated as a single opaque
    layer, whose MACs are counted as 0.

    The pass runs with autograd paused (prediction mode: dropout is the
    identity) on an all-zero float32 input.  The hybridize flags are left
    alone; a hybridized leaf runs through its own cached graph.

    Parameters
    ----------
    net : mxnet.gluon.Block
        The network.  Parameters that have not been initialised are initialised
        in place with Gluon's default initializer, as ``net.initialize(ctx=ctx)``
        would; so an uninitialised network comes back initialised (on ``ctx``).
        Already initialised parameters are left untouched.
    input_shape : sequence of int
        Input shape with the batch axis first, e.g. ``(1, 1, 224, 224)``.
    ctx : mxnet.Context, optional
        Where to run the pass.  By default the context of the first initialised
        parameter, or ``mx.cpu()`` if there is none.

    Returns
    -------
    Summary
        The rows and totals; ``str()`` of it is the table.

    Raises
    ------
    ValueError
        If ``input_shape`` is not a non-empty sequence of positive integers, or a
        layer cannot take the shape that reaches it (naming the layer).
    """
    input_shape = _check_shape(input_shape)
    params = list(net.collect_params().values())
    if ctx is None:
        ctx = _first_initialised_ctx(params) or mx.cpu()
    for param in params:
        if not _is_initialised(param):
            # Per parameter rather than net.initialize(), which warns about (and skips)
            # every parameter that already has a value.
            param.initialize(ctx=ctx)

    rows = []
    seen_params: Dict[int, mx.gluon.Parameter] = {}
    x = nd.zeros(input_shape, ctx=ctx, dtype='float32')
    with autograd.pause():
        for layer in layers(net):
            in_shape = x.shape
            try:
                x = layer(x)
            except mx.base.MXNetError as err:
                raise ValueError(f'input_shape {input_shape} does not fit the network: '
                                 f'{layer.name} ({type(layer).__name__}) cannot take an input '
                                 f'of shape {in_shape}: {mxnet_message(err)}') from None
            out_shape = tuple(int(d) for d in x.shape)
            layer_params = list(layer.collect_params().values())
            for param in layer_params:
                seen_params[id(param)] = param
            rows.append(LayerRow(
                name=layer.name,
                layer_type=type(layer).__name__,
                output_shape=out_shape,
                params=sum(_size(p.shape) for p in layer_params if p.grad_req != 'null'),
                macs=_macs(layer, in_shape, out_shape),
                activation_bytes=_size(out_shape) * _itemsize(x.dtype)))
    try:
        x.wait_to_read()  # surface any asynchronous MXNet error here, not later
    except mx.base.MXNetError as err:
        raise ValueError(f'the forward pass of input_shape {input_shape} failed: '
                         f'{mxnet_message(err)}') from None

    unique = list(seen_params.values())
    return Summary(
        input_shape=input_shape,
        rows=rows,
        total_params=sum(_size(p.shape) for p in unique if p.grad_req != 'null'),
        total_macs=sum(row.macs for row in rows),
        total_activation_bytes=sum(row.activation_bytes for row in rows),
        param_bytes=sum(_size(p.shape) * _itemsize(p.dtype) for p in unique))


def _macs(layer: Block, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]) -> int:
    """Multiply-accumulates per example; biases, activations and pooling are not counted."""
    if isinstance(layer, (_CONV_TYPES, _CONV_TRANSPOSE_TYPES, nn.Dense)):
        weight_shape = layer.weight.shape
    else:
        return 0
    batch = out_shape[0]
    if isinstance(layer, _CONV_TRANSPOSE_TYPES):
        # Weight is (in_c, out_c/groups, *kernel): every input element is spread over
        # out_c/groups * kernel outputs.
        return _size(in_shape) // batch * (_size(weight_shape) // weight_shape[0])
    if isinstance(layer, _CONV_TYPES):
        # Weight is (out_c, in_c/groups, *kernel) in either layout, so each output element
        # costs weight.size / out_c MACs: out_h*out_w*out_c * (in_c/groups)*kh*kw.
        return _size(out_shape) // batch * (_size(weight_shape) // weight_shape[0])
    # Dense: weight is (units, in_units); each output element is a length-in_units dot
    # product, which also covers flatten=False on inputs with extra axes.
    return _size(out_shape) // batch * weight_shape[1]


def _is_initialised(param: mx.gluon.Parameter) -> bool:
    # list_ctx() is the public way to ask; deferred (shape-pending) counts as initialised.
    try:
        param.list_ctx()
    except RuntimeError:
        return False
    return True


def _first_initialised_ctx(params: List[mx.gluon.Parameter]) -> Optional[mx.Context]:
    for param in params:
        if _is_initialised(param):
            return param.list_ctx()[0]
    return None


def _check_shape(shape: Sequence[int]) -> Tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f'input_shape must be a sequence of positive integers, '
                         f'got {shape!r}') from None
    if not dims:
        raise ValueError('input_shape must hold at least one dimension')
    for index, dim in enumerate(dims):
        check_positive(f'input_shape[{index}]', dim, (int, np.integer))
    return tuple(int(d) for d in dims)


def _size(shape: Sequence[int]) -> int:
    result = 1
    for dim in shape:
        result *= int(dim)
    return result


def _itemsize(dtype: Any) -> int:
    return np.dtype(dtype).itemsize


def _format_shape(shape: Sequence[int]) -> str:
    return '(' + ', '.join(str(d) for d in shape) + ')'


def _format_mb(num_bytes: int) -> str:
    return f'{num_bytes / _BYTES_PER_MB:,.2f}'


def measure_step(net: Block, input_shape: Sequence[int], ctx: Optional[mx.Context] = None,
                 repeat: int = 3) -> Dict[str, Optional[float]]:
    """Time one training step's forward and backward pass and its peak memory.

    The network must be initialised.  One untimed step comes first (MXNet
    allocates and plans on the first call); then ``repeat`` timed steps, of
    which the median is reported.

    Parameters
    ----------
    net : mxnet.gluon.Block
        An initialised network.
    input_shape : sequence of int
        Batch shape, e.g. ``(16, 1, 224, 224)``.
    ctx : mxnet.Context, optional
        Where to run (default the CPU).
    repeat : int
        Timed steps.

    Returns
    -------
    dict
        ``seconds`` (median forward+backward time per batch) and ``peak_bytes``:
        on a GPU the device memory in use at the end of the steps, on Linux
        CPUs the growth of the process's peak resident memory over one step,
        elsewhere None.

    Raises
    ------
    ValueError
        If ``input_shape`` is not a non-empty sequence of positive integers, or
        the network cannot take it.
    """
    import statistics
    import time

    ctx = ctx or mx.cpu()
    x = nd.random.uniform(shape=_check_shape(input_shape), ctx=ctx)

    def step() -> float:
        start = time.perf_counter()
        with autograd.record():
            out = net(x)
        out.backward()
        nd.waitall()
        return time.perf_counter() - start

    try:
        step()  # the one that meets a shape the network cannot take
    except mx.base.MXNetError as err:
        raise ValueError(f'input_shape {tuple(x.shape)} does not fit the network: '
                         f'{mxnet_message(err)}') from None
    baseline = _reset_peak_rss()
    first = step()
    peak = _peak_rss() - baseline if baseline is not None else None
    seconds = statistics.median([first] + [step() for _ in range(repeat - 1)])
    if ctx.device_type == 'gpu':
        free, total = mx.context.gpu_memory_info(ctx.device_id)
        peak = total - free
    return {'seconds': seconds, 'peak_bytes': peak}


def _peak_rss() -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    raise OSError('no VmHWM line in /proc/self/status')


def _reset_peak_rss() -> Optional[int]:
    """Reset Linux's peak-RSS mark to the current RSS and return it; None where unsupported."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        return _peak_rss()
    except OSError:
        return None
