import mxnet as mx
import pytest

from vgg.devices import parse_ctx, try_all_gpus, try_gpu


def _has_gpu():
    return mx.context.num_gpus() > 0


def test_try_gpu_falls_back_to_cpu():
    expected = mx.gpu(0) if _has_gpu() else mx.cpu()
    assert try_gpu() == expected


def test_try_all_gpus():
    ctxs = try_all_gpus()
    if _has_gpu():
        assert ctxs == [mx.gpu(i) for i in range(mx.context.num_gpus())]
    else:
        assert ctxs == [mx.cpu()]


@pytest.mark.parametrize('spec,expected', [('cpu', [mx.cpu()]), ('CPU:0,1', [mx.cpu(0), mx.cpu(1)]),
                                           (' auto ', [try_gpu()])])
def test_parse_ctx(spec, expected):
    assert parse_ctx(spec) == expected


@pytest.mark.parametrize('spec,match', [('tpu', 'unknown device'), ('gpu:a', 'integers'),
                                        ('cpu:0,0', 'distinct'), ('cpu:-1', 'non-negative')])
def test_parse_ctx_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_ctx(spec)


@pytest.mark.skipif(_has_gpu(), reason='needs a machine without a GPU')
def test_gpu_without_gpu_says_what_to_do():
    with pytest.raises(ValueError, match='no working GPU'):
        parse_ctx('gpu')
    with pytest.raises(ValueError, match='GPU 0 does not work'):
        parse_ctx('gpu:0')
