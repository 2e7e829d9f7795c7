"""Choosing where to compute: GPUs when they work, else the CPU."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, List, Sequence, Union

import mxnet as mx
from mxnet import nd

_MAX_GPUS = 16
# CPU contexts are labels for the engine, not cores; MXNet hangs on ids beyond int32.
_MAX_CPU_CONTEXTS = 64
# Where to compute, as the library's functions take it: a spec for parse_ctx, or contexts.
CtxSpec = Union[None, str, mx.Context, Sequence[mx.Context]]


def _gpu_works(index: int) -> bool:
    # Asking for the count first keeps a CPU build quiet: allocating on a GPU there
    # logs "GPU support is disabled" on stderr, into every error and notebook.
    try:
        if index >= mx.context.num_gpus():
            return False
        nd.zeros((1,), ctx=mx.gpu(index)).wait_to_read()
    except mx.base.MXNetError:
        return False
    return True


def try_gpu() -> mx.Context:
    """``mx.gpu(0)`` if a GPU can hold an array, else ``mx.cpu()`` (gluonbook's behaviour)."""
    return mx.gpu(0) if _gpu_works(0) else mx.cpu()


def try_all_gpus() -> List[mx.Context]:
    """Every working GPU in order, or ``[mx.cpu()]`` when there is none (gluonbook's behaviour)."""
    ctxs = []
    for index in range(_MAX_GPUS):
        if not _gpu_works(index):
            break
        ctxs.append(mx.gpu(index))
    return ctxs or [mx.cpu()]


def parse_ctx(spec: str) -> List[mx.Context]:
    """Parse a device spec: 'auto', 'cpu', 'gpu', 'gpu:0,1' or 'cpu:0,1' (several CPU contexts).

    'auto' is :func:`try_gpu`; 'gpu' is :func:`try_all_gpus` but fails when no GPU works.

    Raises
    ------
    ValueError
        If the spec is not a string, is malformed or names a GPU that does not work.
    """
    if not isinstance(spec, str):
        raise ValueError(f'spec must be a device string: auto, cpu, gpu, gpu:0,1 or cpu:0,1; '
                         f'got {spec!r}')
    text = spec.strip().lower()
    if text == 'auto':
        return [try_gpu()]
    kind, _, indices = text.partition(':')
    if kind not in ('cpu', 'gpu'):
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, gpu, gpu:0,1 or cpu:0,1")
    if indices:
        try:
            ids = [int(i) for i in indices.split(',')]
        except ValueError:
            raise ValueError(f'device indices in {spec!r} must be integers, e.g. gpu:0,1') from None
        if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f'device indices in {spec!r} must be distinct and non-negative')
        if kind == 'cpu' and max(ids) >= _MAX_CPU_CONTEXTS:
            raise ValueError(f'CPU context ids in {spec!r} must be below {_MAX_CPU_CONTEXTS} '
                             '(they name engine queues, not cores: cpu:0,1 is two)')
    else:
        ids = [0]
    if kind == 'cpu':
        return [mx.cpu(i) for i in ids]
    if not indices:
        ctxs = try_all_gpus()
        if ctxs[0].device_type != 'gpu':
            raise ValueError("no working GPU found for device 'gpu'; use --ctx cpu, "
                             'or install an mxnet-cuXXX wheel that matches your CUDA')
        return ctxs
    broken = [i for i in ids if not _gpu_works(i)]
    if broken:
        raise ValueError(f'GPU {broken[0]} does not work (spec {spec!r}); check nvidia-smi '
                         'and that an mxnet-cuXXX wheel is installed')
    return [mx.gpu(i) for i in ids]


def as_contexts(ctx: CtxSpec, default: str) -> List[mx.Context]:
    """``ctx`` as a non-empty list of contexts.

    Parameters
    ----------
    ctx : None, str, Context or list of Context
        A string goes through :func:`parse_ctx` ('cpu', 'gpu:0,1', ...); None
        stands for ``default``.
    default : str
        The spec that None means to the caller: 'cpu' for gluonbook's ``train``
        and ``evaluate_accuracy``, 'auto' (:func:`try_gpu`) for a run.

    Raises
    ------
    ValueError
        If ``ctx`` is none of these, or :func:`parse_ctx` refuses the spec.
    """
    if ctx is None:
        ctx = default
    if isinstance(ctx, str):
        return parse_ctx(ctx)
    if isinstance(ctx, mx.Context):
        return [ctx]
    ctxs = list(ctx) if isinstance(ctx, (list, tuple)) else []
    if not ctxs or not all(isinstance(c, mx.Context) for c in ctxs):
        raise ValueError(f'ctx must be a context, a list of contexts or a spec such as '
                         f"'cpu' or 'gpu:0,1', got {ctx!r}")
    return ctxs


def _cpu() -> Dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name':
                    model = value.strip()
                elif key.strip() == 'flags':
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:  # not Linux: the model from platform, no ISA flags
        pass
    isa = [name for name in ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile')
           if name in flags]
    return {'cpu': model, 'isa': isa, 'cores': os.cpu_count()}


def environment(ctx: Sequence[mx.Context] = ()) -> Dict[str, Any]:
    """Where and with what a run computes: devices, CPU model and ISA, package versions.

    Recorded in every run directory, since speed (and, for a few operators,
    the last bits of the results) depends on them.
    """
    import numpy

    from . import __version__
    return dict(ctx=[str(c) for c in ctx], **_cpu(),
                omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
                versions={'python': sys.version.split()[0], 'mxnet': mx.__version__,
                          'numpy': numpy.__version__, 'vgg': __version__})
