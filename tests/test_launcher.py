"""``vgg launch --hosts`` for real: jobs over ssh between network namespaces (tests/cluster.py).

Two hosts, each a network namespace with its own address and sshd: the
scheduler, the server and worker 0 run on the first, worker 1 on the second.
The whole module skips, saying why, where namespaces or sshd are not available.
"""
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from mxnet import nd

import cluster
from helpers import (JOB_TIMEOUT, LINE, WORKER, run_cli, save_initial_parameters,
                     start_logged, wait_for, wait_for_output)
from vgg.runs import Run


@pytest.fixture(scope='module')
def hosts(tmp_path_factory):
    reason = cluster.missing()
    if reason:
        pytest.skip(f'no test cluster: {reason}')
    try:
        made = cluster.Cluster(tmp_path_factory.mktemp('cluster'), num_hosts=2).__enter__()
    except RuntimeError as err:  # e.g. bridged traffic filtered: this machine cannot host it
        pytest.skip(f'no test cluster: {err}')
    try:
        yield made
    finally:
        made.close()


def launch_args(hosts, *command):
    return ('launch', '-n', 2, '-s', 1, '--hosts', hosts.hosts_file, '--ssh-config',
            hosts.ssh_config, '--timeout', JOB_TIMEOUT, '--', *command)


def assert_hosts_empty(hosts, seconds=20):
    """Nothing of the job is left on any host (the sshd listeners aside)."""
    for index in range(len(hosts.hosts)):
        wait_for(lambda: not hosts.pids(index), seconds,
                 f'the processes on {hosts.hosts[index]} to end: {hosts.pids(index)}')


def start_job(hosts, tmp_path, *command):
    return start_logged(tmp_path, *launch_args(hosts, *command))


def job_pid(hosts, index, marker):
    """The pid of the process on host ``index`` whose command line holds ``marker``."""
    for pid in hosts.pids(index):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if marker.encode() in f.read():
                    return pid
        except FileNotFoundError:
            pass
    return None


@pytest.mark.slow
def test_each_host_answers_ssh_on_its_own_address(hosts):
    for host in hosts.hosts:
        result = hosts.ssh(host, 'hostname -I')
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [host]


@pytest.mark.slow
def test_job_across_hosts_ends_with_identical_parameters(hosts, tmp_path):
    save_initial_parameters(tmp_path)
    result = run_cli(*launch_args(hosts, sys.executable, WORKER, tmp_path, 2),
                     timeout=JOB_TIMEOUT + 30)
    assert result.returncode == 0, result.stderr
    assert re.match(rf'vgg launch: scheduler at {re.escape(hosts.hosts[0])}:\d+;', result.stderr)
    params = [nd.load(str(tmp_path / f'worker-{rank}.params')) for rank in (0, 1)]
    assert params[0].keys() == params[1].keys()
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name].asnumpy(), params[1][name].asnumpy())
    assert not np.array_equal(params[0][name].asnumpy(),  # and they did train
                              nd.load(str(tmp_path / 'init.params'))[name].asnumpy())
    assert_hosts_empty(hosts)


@pytest.mark.slow
def test_vgg_train_across_hosts_worker_0_writes_the_run(hosts, fashion_dir, tmp_path):
    out = tmp_path / 'run'
    result = run_cli(*launch_args(
        hosts, sys.executable, '-m', 'vgg', 'train', '--kvstore', 'dist_sync', '--ctx', 'cpu',
        '--resize', 32, '--ratio', 16, '--batch-size', 32, '--max-samples', 64, '--epochs', 1,
        '--seed', 0, '--no-progress', '--data-dir', fashion_dir, '--out', out),
        timeout=JOB_TIMEOUT + 30)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].strip() == 'training on cpu(0)' and len(lines) == 2, result.stdout
    assert LINE.fullmatch(lines[1].strip()).group(1) == '1'
    run = Run(str(out))
    assert len(run.history()) == 1 and os.path.isfile(run.checkpoint(1)['params'])
    assert_hosts_empty(hosts)


@pytest.mark.slow
def test_killed_worker_on_one_host_stops_every_host(hosts, tmp_path):
    save_initial_parameters(tmp_path)
    launcher, (out_path, err_path) = start_job(hosts, tmp_path, sys.executable, WORKER,
                                               tmp_path, 1000000)
    try:
        wait_for_output(launcher, (out_path, err_path), 'training on')
        worker = job_pid(hosts, 1, 'dist_worker.py')
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        assert launcher.wait(timeout=60) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    err = err_path.read_text()
    assert re.search(rf'worker 1 on {re.escape(hosts.hosts[1])} \(pid \d+\) exited with code 255 '
                     r'\(ssh: the connection failed or the remote process was killed\); stopping '
                     'every process of the job', err), err
    assert_hosts_empty(hosts)


@pytest.mark.slow
def test_kill_9_of_the_launcher_leaves_nothing_on_any_host(hosts, tmp_path):
    save_initial_parameters(tmp_path)
    launcher, paths = start_job(hosts, tmp_path, sys.executable, WORKER, tmp_path, 1000000)
    try:
        wait_for_output(launcher, paths, 'training on')
        assert job_pid(hosts, 0, 'import mxnet') and job_pid(hosts, 1, 'dist_worker.py')
        launcher.kill()
        launcher.wait()
        assert_hosts_empty(hosts)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # Nor here: the ssh clients died with the launcher.
    ssh = subprocess.run(['pgrep', '-f', f'ssh -F {hosts.ssh_config}'], capture_output=True)
    assert ssh.stdout == b''


def test_ssh_config_without_hosts_is_one_clear_error(tmp_path, capsys):
    from vgg.cli import main
    config = tmp_path / 'ssh_config'
    config.write_text('')
    assert main(['launch', '-n', '2', '--ssh-config', str(config), '--', 'true']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '--ssh-config is for --hosts' in err
