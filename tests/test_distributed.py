"""Data-parallel training over processes: sharding, the worker side, ``vgg launch``.

The jobs run on this machine over 127.0.0.1 only: one scheduler, one server and
two workers each.
"""
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, init, nd

import dist_worker
from helpers import (
    JOB_TIMEOUT,
    LINE,
    REPO,
    WORKER,
    run_cli,
    save_initial_parameters,
    small_cnn,
    start_logged,
    started_pids,
    synthetic_batches,
    wait_for,
    wait_for_output,
)
from vgg.cli import main
from vgg.data import load_data_fashion_mnist, shard
from vgg.distributed import PS_ENV, Worker
from vgg.launcher import STOP_GRACE, TIMEOUT_CODE, launch, plan, read_hosts
from vgg.runs import Run
from vgg.training import train


# Sharding.
def test_shards_are_equal_interleaved_and_leave_out_the_remainder():
    items = np.arange(11)
    parts = [shard(items, 3, k) for k in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    # Batch t of every part together is batch t of the whole with 3 times the batch size.
    for t in range(3):
        together = np.concatenate([p[t:t + 1] for p in parts])
        assert sorted(together) == items[3 * t:3 * t + 3].tolist()


@pytest.mark.parametrize('num_parts,part_index', [(0, 0), (2, 2), (2, -1), (True, 0)])
def test_shard_rejects_bad_parts(num_parts, part_index):
    with pytest.raises(ValueError, match='num_parts|part_index'):
        shard(np.arange(4), num_parts, part_index)


def test_loader_shards_the_training_set_only(fashion_dir):
    train_iter, test_iter = load_data_fashion_mnist(8, root=fashion_dir, num_parts=2,
                                                    part_index=1)
    assert train_iter.num_examples == 48 and test_iter.num_examples == 40
    with pytest.raises(ValueError, match='3 workers need at least 3 training images'):
        load_data_fashion_mnist(8, root=fashion_dir, max_samples=2, num_parts=3, part_index=0)


# The worker side, without a job.
def test_batch_size_must_divide_among_the_workers():
    assert Worker(num_workers=4).local_batch_size(128) == 32
    with pytest.raises(ValueError, match='batch size 130 must be a multiple of the 4 workers'):
        Worker(num_workers=4).local_batch_size(130)


def test_train_without_a_test_set_skips_the_test_pass(capsys):
    batches = synthetic_batches(64, 32, 0)
    net = small_cnn()
    net.initialize(init.Xavier())
    history = train(batches, None, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                    gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1}),
                    mx.cpu(), 1, progress=False)
    assert math.isnan(history[0]['test_acc'])
    assert 'test acc nan' in capsys.readouterr().out


@pytest.fixture
def no_job(monkeypatch):
    """An environment without ps-lite's variables, as outside ``vgg launch``."""
    for name in PS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_dist_kvstore_outside_a_job_is_one_clear_error(no_job, capsys):
    assert main(['train', '--kvstore', 'dist_sync', '--ctx', 'cpu']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'DMLC_ROLE' in err and 'vgg launch -n WORKERS' in err


def test_launched_worker_without_dist_kvstore_is_one_clear_error(no_job, capsys):
    no_job.setenv('DMLC_ROLE', 'worker')
    assert main(['train', '--ctx', 'cpu']) == 2
    assert 'pass --kvstore dist_sync' in capsys.readouterr().err


# The plan of a job: its processes and their environment.
def test_local_plan_binds_every_process_to_loopback():
    processes = plan(['vgg', 'train'], 2, 1, port=9000)
    assert [p.name for p in processes] == ['scheduler', 'server 0', 'worker 0', 'worker 1']
    for process in processes:
        assert process.host is None
        assert {k: process.env[k] for k in ('DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT',
                                            'DMLC_NUM_SERVER', 'DMLC_NUM_WORKER',
                                            'DMLC_NODE_HOST')} == \
            {'DMLC_PS_ROOT_URI': '127.0.0.1', 'DMLC_PS_ROOT_PORT': '9000',
             'DMLC_NUM_SERVER': '1', 'DMLC_NUM_WORKER': '2', 'DMLC_NODE_HOST': '127.0.0.1'}
    assert [p.env['DMLC_ROLE'] for p in processes] == ['scheduler', 'server', 'worker', 'worker']
    assert processes[0].argv == [sys.executable, '-c', 'import mxnet']
    assert processes[3].command('/here') == ['vgg', 'train']
    assert 'OMP_NUM_THREADS' in processes[3].env and 'OMP_NUM_THREADS' not in processes[1].env
    assert int(plan(['x'], 1)[0].env['DMLC_PS_ROOT_PORT']) > 0  # a free port by default


def test_hosts_plan_builds_ssh_commands():
    processes = plan(['vgg', 'train', '--out', 'runs/a b'], 3, 2,
                     hosts=['10.0.0.1', '10.0.0.2'], python='/opt/py/bin/python')
    assert [(p.name, p.host) for p in processes] == [
        ('scheduler', '10.0.0.1'), ('server 0', '10.0.0.1'), ('server 1', '10.0.0.2'),
        ('worker 0', '10.0.0.1'), ('worker 1', '10.0.0.2'), ('worker 2', '10.0.0.1')]
    assert processes[4].command('/work/my runs') == [
        'ssh', '-o', 'BatchMode=yes', '-tt', '--', '10.0.0.2',
        "cd '/work/my runs' && exec env DMLC_PS_ROOT_URI=10.0.0.1 DMLC_PS_ROOT_PORT=9091 "
        'DMLC_NUM_SERVER=2 DMLC_NUM_WORKER=3 PYTHONUNBUFFERED=1 DMLC_ROLE=worker '
        "DMLC_NODE_HOST=10.0.0.2 vgg train --out 'runs/a b'"]
    assert processes[0].command('/w')[-1].endswith("/opt/py/bin/python -c 'import mxnet'")


def test_hosts_file(tmp_path):
    path = tmp_path / 'hosts'
    path.write_text('# the cluster\n10.0.0.1\n\n10.0.0.2  # second\n')
    assert read_hosts(str(path)) == ['10.0.0.1', '10.0.0.2']
    path.write_text('# nobody\n')
    with pytest.raises(ValueError, match='lists no host'):
        read_hosts(str(path))
    with pytest.raises(ValueError, match='cannot read hosts file'):
        read_hosts(str(tmp_path / 'missing'))


@pytest.mark.parametrize('args,message', [
    (['-n', '2'], 'no worker command'),
    (['-n', '2', '--hosts', '/nonexistent/hosts', '--', 'vgg'], 'cannot read hosts file')])
def test_launch_input_errors(args, message, capsys):
    assert main(['launch', *args]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and message in err


# Jobs.
def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_all_ended(err: str) -> None:
    pids = started_pids(err)
    assert len(pids) == 4, err
    assert [name for name, pid in pids.items() if alive(pid)] == []


def launch_in_process(command, timeout=None):
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    code = launch(command, 2, timeout=timeout, out=out, err=err)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


@pytest.mark.slow
def test_failing_worker_stops_the_job_and_shows_its_last_lines():
    code, _, err, _ = launch_in_process(
        [sys.executable, '-c', "import sys; print('no data here', file=sys.stderr); sys.exit(3)"])
    assert code == 3
    assert re.search(r'worker \d \(pid \d+\) exited with code 3; stopping every process', err)
    assert re.search(r'last lines of worker \d:\n    no data here', err)
    assert_all_ended(err)


@pytest.mark.slow
def test_timeout_stops_every_process():
    code, _, err, seconds = launch_in_process(
        [sys.executable, '-c', 'import time; time.sleep(600)'], timeout=2)
    assert code == TIMEOUT_CODE and 'timed out after 2 s; stopping' in err
    assert seconds < 2 + STOP_GRACE + 5
    assert_all_ended(err)


def start_launcher(tmp_path, *command):
    """``vgg launch -n 2 -- COMMAND`` in the background; its output goes to files."""
    return start_logged(tmp_path, 'launch', '-n', '2', '--timeout', JOB_TIMEOUT, '--', *command)


def stop_leftovers(launcher, pids) -> None:
    """Only when a test failed: leave nothing behind."""
    if launcher.poll() is None:
        launcher.kill()
        for pid in pids.values():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
def test_second_sigterm_does_not_cut_the_cleanup_short(tmp_path):
    # Workers that ignore SIGTERM keep the launcher stopping them for STOP_GRACE
    # seconds, then get SIGKILL; the second SIGTERM (timeout(1) sends two) comes meanwhile.
    launcher, (out_path, err_path) = start_launcher(
        tmp_path, sys.executable, '-c', 'import signal, time; '
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(600)")
    pids = {}
    try:
        wait_for(lambda: out_path.read_text().count('ready') == 2, 60, 'the workers')
        pids = started_pids(err_path.read_text())
        launcher.send_signal(signal.SIGTERM)
        time.sleep(1)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=STOP_GRACE + 20) == 130
    finally:
        stop_leftovers(launcher, pids)
    assert 'vgg: interrupted' in err_path.read_text()
    assert_all_ended(err_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize('start', ['same', 'own'])
def test_two_workers_keep_identical_parameters_equal_to_one_process(tmp_path, start):
    # 'own': worker 1 draws its own start, and must be given worker 0's before its first step.
    save_initial_parameters(tmp_path)
    result = run_cli('launch', '-n', 2, '-s', 1, '--timeout', JOB_TIMEOUT, '--',
                     sys.executable, WORKER, tmp_path, dist_worker.EPOCHS, start,
                     timeout=JOB_TIMEOUT + 30)
    assert result.returncode == 0, result.stderr
    assert_all_ended(result.stderr)
    # Only worker 0 prints: once the device line, once each epoch line.
    lines = result.stdout.splitlines()
    assert lines[0] == 'training on cpu(0)' and len(lines) == 1 + dist_worker.EPOCHS
    assert all(LINE.fullmatch(line) for line in lines[1:])
    params = [nd.load(str(tmp_path / f'worker-{rank}.params')) for rank in (0, 1)]
    histories = [json.loads((tmp_path / f'worker-{rank}.json').read_text()) for rank in (0, 1)]
    for name in params[0]:  # both pulled the same sums and made the same updates
        np.testing.assert_array_equal(params[0][name].asnumpy(), params[1][name].asnumpy())
    assert histories[0][-1]['loss'] < histories[0][0]['loss']  # the loss fell
    assert math.isnan(histories[1][0]['test_acc'])

    # One process on the whole set with the same global batch, from the same start.
    net = small_cnn()
    net.load_parameters(str(tmp_path / 'init.params'))
    train_iter, test_iter = dist_worker.datasets()
    single = train(train_iter, test_iter, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                   gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': dist_worker.LR}),
                   mx.cpu(), dist_worker.EPOCHS, progress=False)
    # The same updates, but gradients summed in another order: float32 rounding
    # differences (~1e-7 relative per step) that the few steps hardly grow.
    for name, value in net._collect_params_with_prefix().items():
        np.testing.assert_allclose(params[0][name].asnumpy(), value.data().asnumpy(),
                                   rtol=1e-4, atol=1e-5)
    for epoch, stats in enumerate(single):
        # Each worker's loss is its half's mean: together, the whole set's.
        shards = (histories[0][epoch]['loss'] + histories[1][epoch]['loss']) / 2
        assert shards == pytest.approx(stats['loss'], rel=1e-4)
        assert histories[0][epoch]['test_acc'] == pytest.approx(stats['test_acc'],
                                                               abs=1 / dist_worker.NUM_TEST)


@pytest.mark.slow
def test_cli_job_worker_0_prints_and_saves_once(fashion_dir, tmp_path):
    out = tmp_path / 'run'
    result = run_cli('launch', '-n', 2, '--timeout', JOB_TIMEOUT, '--',
                     sys.executable, '-m', 'vgg', 'train', '--kvstore', 'dist_sync',
                     '--ctx', 'cpu:0,1', '--resize', 32, '--ratio', 16, '--batch-size', 32,
                     '--max-samples', 64, '--epochs', 1, '--seed', 0, '--no-progress',
                     '--data-dir', fashion_dir, '--out', out, timeout=JOB_TIMEOUT + 30)
    assert result.returncode == 0, result.stderr
    assert_all_ended(result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == 'training on [cpu(0), cpu(1)]' and len(lines) == 2
    assert LINE.fullmatch(lines[1]).group(1) == '1'
    run = Run(str(out))
    assert run.config().batch_size == 32 and len(run.history()) == 1
    assert os.path.isfile(run.checkpoint(1)['params'])


@pytest.mark.slow
def test_killed_worker_fails_the_job_within_the_timeout(tmp_path):
    save_initial_parameters(tmp_path)
    launcher, (out_path, err_path) = start_launcher(tmp_path, sys.executable, WORKER, tmp_path,
                                                    1000000)
    pids = {}
    try:
        wait_for_output(launcher, (out_path, err_path), 'training on')
        pids = started_pids(err_path.read_text())
        os.kill(pids['worker 1'], signal.SIGKILL)
        killed = time.monotonic()
        assert launcher.wait(timeout=60) == 128 + signal.SIGKILL
        assert time.monotonic() - killed < STOP_GRACE + 10
    finally:
        stop_leftovers(launcher, pids)
    err = err_path.read_text()
    assert f"worker 1 (pid {pids['worker 1']}) was killed by SIGKILL; stopping every " \
        'process of the job' in err
    assert_all_ended(err)


def _children(pid):
    with open(f'/proc/{pid}/task/{pid}/children') as f:
        return [int(child) for child in f.read().split()]


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split()[2] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_kill_9_of_the_launcher_leaves_no_process_behind():
    launcher = subprocess.Popen(
        [sys.executable, '-m', 'vgg', 'launch', '-n', '2', '-s', '1', '--', sys.executable, '-c',
         'import time; time.sleep(120)'], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(_children(launcher.pid)) < 4 and time.time() < deadline:  # scheduler, server, 2
        time.sleep(0.2)
    started = _children(launcher.pid)
    assert len(started) == 4
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in started) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started if _alive(pid)]
