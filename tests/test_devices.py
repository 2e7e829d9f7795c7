import re
import subprocess
import sys

import mxnet as mx
import pytest

from vgg.devices import as_contexts, parse_ctx, try_all_gpus, try_gpu


def _has_gpu():
    return mx.context.num_gpus() > 0


cpu_only = pytest.mark.skipif(_has_gpu(), reason='needs a machine without a GPU')
gpu_only = pytest.mark.skipif(not _has_gpu(), reason='needs a GPU')
cpu_build = pytest.mark.skipif(mx.runtime.Features().is_enabled('CUDA'),
                               reason='needs a CPU build of MXNet')


@cpu_only
def test_without_a_gpu_everything_falls_back_to_the_cpu():
    assert try_gpu() == mx.cpu()
    assert try_all_gpus() == [mx.cpu()]
    assert parse_ctx(' auto ') == [mx.cpu()] and parse_ctx('AUTO') == [mx.cpu()]


@gpu_only
def test_with_a_gpu_auto_is_the_first_gpu():
    assert try_gpu() == mx.gpu(0)
    assert try_all_gpus() == [mx.gpu(i) for i in range(mx.context.num_gpus())]
    assert parse_ctx(' auto ') == [mx.gpu(0)]


@pytest.mark.parametrize('spec,expected', [('cpu', [mx.cpu()]), ('CPU:0,1', [mx.cpu(0), mx.cpu(1)]),
                                           (' cpu:3 ', [mx.cpu(3)])])
def test_parse_ctx(spec, expected):
    assert parse_ctx(spec) == expected


def test_as_contexts_takes_a_spec_a_context_or_a_list_and_the_callers_default():
    assert as_contexts(None, default='cpu') == [mx.cpu()]
    assert as_contexts(None, default='auto') == [try_gpu()]
    assert as_contexts('cpu:0,1', default='auto') == [mx.cpu(0), mx.cpu(1)]
    assert as_contexts(mx.cpu(1), default='auto') == [mx.cpu(1)]
    assert as_contexts((mx.cpu(0), mx.cpu(1)), default='cpu') == [mx.cpu(0), mx.cpu(1)]
    for bad in ([], [mx.cpu(), 'cpu'], 3):
        with pytest.raises(ValueError, match='ctx must be'):
            as_contexts(bad, default='cpu')


@pytest.mark.parametrize('spec,match', [('tpu', 'unknown device'), ('gpu:a', 'integers'),
                                        ('cpu:0,0', 'distinct'), ('cpu:-1', 'non-negative')])
def test_parse_ctx_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_ctx(spec)


@cpu_only
def test_gpu_without_gpu_says_what_to_do():
    with pytest.raises(ValueError, match='no working GPU'):
        parse_ctx('gpu')
    with pytest.raises(ValueError, match='GPU 0 does not work'):
        parse_ctx('gpu:0')


# Probes every way of asking for a GPU, then (after a marker line on stderr) allocates on
# one directly: the control, which does make MXNet log from C++ on a CPU build.
PROBE_SCRIPT = """
import sys
import vgg
import mxnet as mx
from vgg.devices import parse_ctx, try_all_gpus, try_gpu
print(try_gpu(), try_all_gpus(), parse_ctx('auto'))
for spec in ('gpu', 'gpu:0', 'gpu:0,1'):
    try:
        parse_ctx(spec)
    except ValueError:
        pass
sys.stdout.flush()
sys.stderr.write('--- control ---\\n')
sys.stderr.flush()
try:
    mx.nd.zeros((1,), ctx=mx.gpu(0)).wait_to_read()
except mx.base.MXNetError:
    pass
"""


@pytest.mark.slow
@cpu_build
def test_probing_for_a_gpu_on_a_cpu_build_writes_nothing_to_stderr():
    """MXNet logs "GPU support is disabled" from C++ (file descriptor 2, which capsys does not
    see) when an array is put on a GPU of a CPU build: a fresh process catches every byte."""
    result = subprocess.run([sys.executable, '-c', PROBE_SCRIPT], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'cpu(0) [cpu(0)] [cpu(0)]\n'
    probes, _, control = result.stderr.partition('--- control ---\n')
    assert probes == ''
    # The control shows that the capture sees MXNet's C++ log (else the check above proves nothing).
    assert 'GPU' in control, control


@pytest.mark.parametrize('spec', ['cpu:64', 'cpu:2147483648', 'cpu:0,99'])
def test_cpu_context_ids_beyond_the_engines_range_are_refused(spec):
    with pytest.raises(ValueError, match='must be below 64'):
        parse_ctx(spec)


@pytest.mark.parametrize('spec', [None, 0, ['cpu'], mx.cpu()])
def test_a_spec_that_is_not_a_string_is_one_value_error(spec):
    with pytest.raises(ValueError, match=r'^spec must be a device string: auto, cpu, gpu, '
                       rf'gpu:0,1 or cpu:0,1; got {re.escape(repr(spec))}$'):
        parse_ctx(spec)
