"""vgg.fit (in vgg/experiment.py): a whole run from a config, its run directory, resume, Ctrl-C."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, init, nd

import vgg
from helpers import REPO, make_run
from vgg.base import allocation_failure
from vgg.config import RunConfig
from vgg.experiment import Interrupted, OutOfMemory, fit, load_net
from vgg.runs import Run

# Quick settings on the 96 + 40 synthetic images of the fashion_dir fixture.
QUICK = {'resize': 32, 'ratio': 16, 'batch_size': 8, 'epochs': 1, 'seed': 0}


def test_fit_trains_exactly_as_the_chapters_code(fashion_dir):
    # The chapter's training steps written out by hand: same seed, same numbers as fit.
    mx.random.seed(0)
    net = vgg.vgg(vgg.narrow(vgg.VGG11, 16), 10)
    net.initialize(init.Xavier(), ctx=mx.cpu())
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.05})
    train_iter, test_iter = vgg.load_data_fashion_mnist(8, resize=32, root=fashion_dir, seed=0)
    by_hand = vgg.train(train_iter, test_iter, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                        trainer, mx.cpu(), 2, progress=False)
    by_fit = fit(dict(QUICK, epochs=2), ctx='cpu', data_dir=fashion_dir, progress=False)
    for hand, fitted in zip(by_hand, by_fit):
        assert [hand[k] for k in ('loss', 'train_acc', 'test_acc')] == \
            [fitted[k] for k in ('loss', 'train_acc', 'test_acc')]
    assert len(by_fit) == 2


def test_run_record_holds_what_was_used(fashion_dir, tmp_path, monkeypatch, capsys):
    # The data folder comes from the environment, not from an argument: it is recorded all the same.
    monkeypatch.setenv('VGG_DATA_DIR', fashion_dir)
    out = tmp_path / 'run'
    history = fit(QUICK, str(out), ctx=mx.cpu(), progress=False)
    record = json.loads((out / 'config.json').read_text())
    assert record['data_dir'] == os.path.abspath(fashion_dir)
    session, = record['sessions']
    assert session['ctx'] == ['cpu(0)'] and session['from_epoch'] == 0
    assert session['cores'] == os.cpu_count() and isinstance(session['isa'], list)
    assert session['cpu'] and session['versions']['mxnet'] == mx.__version__
    assert session['versions']['numpy'] == np.__version__
    # 96 images in batches of 8: 12 batches, 12 points of finer history, also on disk.
    lines = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert lines[0].pop('checkpoint')['params'] and lines == json.loads(json.dumps(history))
    points = lines[0]['points']
    assert [round(p['epoch'], 6) for p in points] == [round(b / 12, 6) for b in range(1, 13)]
    # The points split the epoch into equal parts: their mean is the epoch's mean.
    assert np.mean([p['loss'] for p in points]) == pytest.approx(lines[0]['loss'], rel=1e-5)
    assert np.mean([p['train_acc'] for p in points]) == pytest.approx(lines[0]['train_acc'])
    assert (out / 'history.png').stat().st_size > 0
    # Later commands find the data through the record, with VGG_DATA_DIR gone.
    monkeypatch.delenv('VGG_DATA_DIR')
    assert Run(str(out)).data_dir() == os.path.abspath(fashion_dir)


def without_checksums(history):
    return [{k: v for k, v in h.items() if k != 'checkpoint'}
            for h in json.loads(json.dumps(history))]


def test_resume_goes_on_where_the_run_stopped_and_records_the_session(fashion_dir, tmp_path,
                                                                       capsys):
    out = str(tmp_path / 'run')
    fit(QUICK, out, ctx='cpu', data_dir=fashion_dir, progress=False)
    history = fit({'epochs': 3}, out, resume=True, ctx='cpu', progress=False)
    assert [h['epoch'] for h in history] == [1, 2, 3]
    assert 'resuming' in capsys.readouterr().out
    record = json.loads(open(os.path.join(out, 'config.json')).read())
    assert record['epochs'] == 3
    assert [s['from_epoch'] for s in record['sessions']] == [0, 1]
    assert without_checksums(Run(out).history()) == without_checksums(history)
    # Nothing left to do: the history comes back without training.
    assert fit(None, out, resume=True, data_dir=fashion_dir) == Run(out).history()
    assert 'checkpoint' in Run(out).history()[-1]
    assert 'all 3 epochs are done' in capsys.readouterr().out


@pytest.mark.parametrize('kwargs, message', [
    ({'config': {'batch_size': 16}, 'resume': True}, "batch_size 16 conflicts with the run's"),
    ({'config': {'epochs': 1}, 'resume': False}, 'already holds a run'),
    ({'config': None, 'resume': True, 'force': True}, 'exclude each other'),
    ({'config': {'epochs': 0}, 'resume': False}, 'epochs must be positive'),
])
def test_refusals_leave_the_run_alone(fashion_dir, tmp_path, kwargs, message, capsys):
    out = str(tmp_path / 'run')
    fit(dict(QUICK, epochs=2), out, ctx='cpu', data_dir=fashion_dir, progress=False)
    before = {name: open(os.path.join(out, name), 'rb').read()
              for name in ('config.json', 'metrics.jsonl')}
    config = kwargs.pop('config')
    with pytest.raises(ValueError, match=message):
        fit(config, out, ctx='cpu', data_dir=fashion_dir, **kwargs)
    assert before == {name: open(os.path.join(out, name), 'rb').read() for name in before}


def test_force_deletes_nothing_until_the_new_run_can_start(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')
    fit(QUICK, out, ctx='cpu', data_dir=fashion_dir, progress=False)
    broken = tmp_path / 'broken'
    broken.mkdir()
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        (broken / name).write_bytes(b'not an IDX file')
    with pytest.raises(vgg.DataError):
        fit(dict(QUICK, resize=64), out, force=True, ctx='cpu', data_dir=str(broken))
    assert Run(out).config().resize == 32 and len(Run(out).history()) == 1
    assert os.path.exists(Run(out).checkpoint(1)['params'])
    fit(dict(QUICK, resize=64), out, force=True, ctx='cpu', data_dir=fashion_dir, progress=False)
    assert Run(out).config().resize == 64


def test_ctrl_c_says_what_is_saved(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')

    def stop_after_epoch_1(stats):
        if stats['epoch'] == 1:
            raise KeyboardInterrupt
    with pytest.raises(Interrupted) as stop:
        fit(dict(QUICK, epochs=3), out, ctx='cpu', data_dir=fashion_dir, progress=False,
            on_epoch_end=stop_after_epoch_1)
    assert isinstance(stop.value, KeyboardInterrupt)
    assert stop.value.saved == 1 and stop.value.run.path == out
    assert stop.value.message() == f'1 of 3 epochs are saved in {out}'
    assert len(Run(out).history()) == 1


def test_a_diverging_run_says_what_is_saved(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')
    with pytest.raises(FloatingPointError, match=f'0 of 1 epochs are saved in {out}'):
        fit(dict(QUICK, lr=1e38), out, ctx='cpu', data_dir=fashion_dir, progress=False)


def test_load_net_gives_the_trained_network(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')
    fit(QUICK, out, ctx='cpu', data_dir=fashion_dir, progress=False)
    first, second = load_net(out, 'cpu'), load_net(out, [mx.cpu()])
    X = nd.random.uniform(shape=(2, 1, 32, 32))
    np.testing.assert_array_equal(first(X).asnumpy(), second(X).asnumpy())
    untrained = vgg.build_net('vgg11', 16, 32)
    assert not np.array_equal(first(X).asnumpy(), untrained(X).asnumpy())


@pytest.mark.parametrize('ctx', [5, [], ['cpu']])
def test_bad_ctx_is_refused(ctx):
    with pytest.raises(ValueError, match='ctx must be'):
        fit(QUICK, ctx=ctx)


def test_a_resumed_run_continues_the_schedule_exactly(fashion_dir, tmp_path, capsys):
    settings = dict(QUICK, epochs=3, momentum=0.9, lr_schedule='cosine', warmup_epochs=0.5)

    def lrs(history):
        return [round(p['lr'], 12) for h in history for p in h['points']]
    whole = fit(settings, str(tmp_path / 'whole'), ctx='cpu', data_dir=fashion_dir,
                progress=False)
    out = str(tmp_path / 'stopped')

    def stop_after_epoch_1(stats):
        if stats['epoch'] == 1:
            raise KeyboardInterrupt
    with pytest.raises(Interrupted):
        fit(settings, out, ctx='cpu', data_dir=fashion_dir, progress=False,
            on_epoch_end=stop_after_epoch_1)
    resumed = fit(None, out, resume=True, ctx='cpu', progress=False)
    # 12 updates an epoch, a point after each: the rate at every update is the same.
    assert len(lrs(whole)) == 36 and lrs(resumed) == lrs(whole)
    assert lrs(whole)[5] == pytest.approx(0.05) and lrs(whole)[-1] == pytest.approx(0, abs=1e-9)


def test_staged_and_model_zoo_starts_through_fit(fashion_dir, tmp_path, capsys):
    shallow = str(tmp_path / 'vgg11')
    fit(QUICK, shallow, ctx='cpu', data_dir=fashion_dir, progress=False)
    fit(dict(QUICK, arch='vgg13_bn', init='msra', init_from=shallow), str(tmp_path / 'vgg13'),
        ctx='cpu', data_dir=fashion_dir, progress=False)
    assert f'started from {shallow}: ' in capsys.readouterr().out
    # A zoo network saved here stands in for MXNet's model store (offline).
    from mxnet.gluon.model_zoo.vision import get_vgg
    zoo = get_vgg(11)
    zoo.initialize()
    zoo(nd.zeros((1, 3, 32, 32)))
    zoo.save_parameters(str(tmp_path / 'zoo.params'))
    settings = {k: v for k, v in QUICK.items() if k != 'ratio'}  # the zoo's widths: ratio 1
    fit(dict(settings, model_zoo='vgg11', model_zoo_params=str(tmp_path / 'zoo.params')),
        str(tmp_path / 'tuned'), ctx='cpu', data_dir=fashion_dir, progress=False)
    out = capsys.readouterr().out
    assert "started from the model zoo's vgg11 (first convolution: RGB weights summed" in out
    assert 'output layer: new, for 10 classes' in out
    assert Run(str(tmp_path / 'tuned')).config().ratio == 1


def test_non_finite_parameters_with_a_finite_loss_are_never_saved(fashion_dir, tmp_path,
                                                                   capsys):
    # One batch an epoch at an absurd rate: the weights overflow while ReLU keeps the loss finite.
    out = str(tmp_path / 'run')
    with pytest.raises(FloatingPointError) as error:
        fit(dict(QUICK, batch_size=96, lr=1e30, epochs=3), out, ctx='cpu',
            data_dir=fashion_dir, progress=False)
    saved = len(Run(out).history())
    assert saved < 3 and f'{saved} of 3 epochs are saved' in str(error.value)
    assert 'parameters became non-finite' in str(error.value)
    if saved:  # what was saved is finite, and the message says how to go on from it
        assert all(np.isfinite(p.data().asnumpy()).all()
                   for p in load_net(out, 'cpu').collect_params().values())
        assert f'vgg train --resume --out {out} --lr 1e+29' in str(error.value)


def test_a_seed_accepted_at_the_start_survives_resume(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')
    fit(dict(QUICK, seed=RunConfig.MAX_SEED, epochs=2), out, ctx='cpu', data_dir=fashion_dir,
        progress=False, on_epoch_end=lambda stats: None)
    assert len(fit(None, out, resume=True, ctx='cpu', progress=False)) == 2
    with pytest.raises(ValueError, match='seed must be between 0 and 2147483647'):
        fit(dict(QUICK, seed=4294967295), ctx='cpu', data_dir=fashion_dir)


def test_a_constant_rate_may_be_lowered_on_resume_and_a_schedule_may_not(fashion_dir, tmp_path,
                                                                         capsys):
    out = str(tmp_path / 'run')
    fit(dict(QUICK, epochs=2), out, ctx='cpu', data_dir=fashion_dir, progress=False)
    fit({'epochs': 3, 'lr': 0.01}, out, resume=True, ctx='cpu', progress=False)
    run = Run(out)
    assert run.config().lr == 0.01
    assert run.history()[-1]['points'][0]['lr'] == pytest.approx(0.01)
    assert run.history()[0]['points'][0]['lr'] == pytest.approx(0.05)
    scheduled = str(tmp_path / 'cosine')
    fit(dict(QUICK, lr_schedule='cosine'), scheduled, ctx='cpu', data_dir=fashion_dir,
        progress=False)
    with pytest.raises(ValueError, match='follows a cosine schedule'):
        fit({'epochs': 2, 'lr': 0.01}, scheduled, resume=True, ctx='cpu')


def test_a_batch_norm_run_resumes_with_its_running_statistics(fashion_dir, tmp_path, capsys):
    out = str(tmp_path / 'run')
    fit(dict(QUICK, arch='vgg11_bn', epochs=2), out, ctx='cpu', data_dir=fashion_dir,
        progress=False, on_epoch_end=lambda stats: None)
    saved = load_net(out, 'cpu')
    means = [p.data().asnumpy() for name, p in saved.collect_params('.*running_mean').items()]
    assert len(means) == 8 and any(np.abs(m).sum() > 0 for m in means)  # learnt, not zeros
    assert [h['epoch'] for h in fit({'epochs': 3}, out, resume=True, ctx='cpu',
                                    progress=False)] == [1, 2, 3]


# What a notebook loop does: load a run's network again and again, dropping the last one.
LOAD_NET_LOOP = '''
import sys
import vgg


def rss_mb():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith('VmRSS:'))


sizes = []
for _ in range(int(sys.argv[2])):
    net = vgg.load_net(sys.argv[1], 'cpu')
    sizes.append(rss_mb())
print(*sizes)
'''


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads RSS from /proc')
def test_load_net_in_a_loop_keeps_memory_bounded(tmp_path):
    run = make_run(tmp_path / 'run', done=1)  # vgg11, ratio 16, resize 32: 67 MB of parameters
    result = subprocess.run([sys.executable, '-c', LOAD_NET_LOOP, run.path, '10'], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sizes = [int(size) for size in result.stdout.split()]
    # Without load_net's waits and collection, each call keeps 130 to 200 MB more until the
    # cycle collector happens to run (0.5 to 1.3 GB over 10 calls); the 10th call must hold
    # what the 2nd did.
    assert max(sizes[1:]) - sizes[1] < 60, sizes


def test_memory_errors_are_told_from_other_errors():
    assert allocation_failure(MemoryError('Unable to allocate 3.35 GiB for an array'))
    failed = mx.base.MXNetError('Traceback (most recent call last):\n  File "../src/storage/'
                                './cpu_device_storage.h", line 74\nMXNetError: Failed to '
                                'allocate CPU Memory')
    assert allocation_failure(failed) == 'Failed to allocate CPU Memory'
    assert allocation_failure(mx.base.MXNetError('Check failed: ret == 0 (12 vs. 0) : '
                                                 'AlignedMallocPitch failed'))
    assert allocation_failure(mx.base.MXNetError('Shape inconsistent')) is None
    assert allocation_failure(ValueError('out of memory')) is None
    stop = OutOfMemory('Failed to allocate CPU Memory', RunConfig(), None, 0, resumed=False)
    assert isinstance(stop, MemoryError)
    assert str(stop) == ('out of memory (Failed to allocate CPU Memory) with batch size 128, '
                         'resize 224 and ratio 4: lower batch_size or resize, or raise ratio '
                         '(fewer channels)')
