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
from helpers import (
    JOB_TIMEOUT,
    LINE,
    WORKER,
    run_cli,
    save_initial_parameters,
    start_logged,
    wait_for,
    wait_for_output,
)
from vgg.launcher import plan, read_hosts
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


@pytest.mark.parametrize('line', ['-oProxyCommand=touch /tmp/x', 'example.com', 'localhost',
                                  'user@10.0.0.2', '10.0.0.2 10.0.0.3', '10.0.0.256', '::1',
                                  '10.0.0.2;true'])
def test_a_hosts_file_line_that_is_not_an_ip_address_is_refused(tmp_path, line):
    path = tmp_path / 'hosts'
    path.write_text(f'# the job\n10.0.0.1\n{line}\n')
    with pytest.raises(ValueError, match=rf'^hosts file {re.escape(str(path))} line 3: host '
                       rf'{re.escape(repr(line))} is not an IPv4 address such as 10\.0\.0\.2'):
        read_hosts(str(path))


def test_hosts_file_takes_addresses_comments_and_blank_lines(tmp_path):
    path = tmp_path / 'hosts'
    path.write_text('10.0.0.1  # the scheduler\n\n  10.0.0.2\n')
    assert read_hosts(str(path)) == ['10.0.0.1', '10.0.0.2']


def test_ssh_options_end_before_the_host():
    processes = plan(['true'], 1, hosts=['10.0.0.2'])
    command = processes[-1].command('/work')
    assert command[0] == 'ssh' and command[command.index('10.0.0.2') - 1] == '--'
    with pytest.raises(ValueError, match=r"host '-oProxyCommand=x' is not an IPv4 address"):
        plan(['true'], 1, hosts=['10.0.0.2', '-oProxyCommand=x'])


@pytest.mark.parametrize('port', [0, -1, 65536, 70000, True, 80.0, '80'])
def test_a_port_outside_1_to_65535_is_refused(port):
    with pytest.raises(ValueError, match=rf'^port must be an integer from 1 to 65535, got '
                       rf'{re.escape(repr(port))}$'):
        plan(['true'], 1, port=port)


@pytest.mark.parametrize('port', [1, 65535])
def test_the_ends_of_the_port_range_are_taken(port):
    assert plan(['true'], 1, port=port)[0].env['DMLC_PS_ROOT_PORT'] == str(port)


def test_launch_with_a_port_above_65535_is_one_line_and_exit_2(capsys):
    from vgg.cli import main
    assert main(['launch', '-n', '1', '--port', '70000', '--', 'true']) == 2
    assert capsys.readouterr().err == ('vgg: error: port must be an integer from 1 to 65535, '
                                       'got 70000\n')


def test_launch_with_port_0_is_one_line_and_exit_2(capsys):
    from vgg.cli import main
    with pytest.raises(SystemExit) as info:
        main(['launch', '-n', '1', '--port', '0', '--', 'true'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'must be positive, got 0' in err, err


@pytest.mark.slow
def test_a_hosts_file_with_an_ssh_option_runs_nothing(tmp_path):
    # An ssh on PATH that records every call: nothing may reach it.
    bin_dir, called, marker = tmp_path / 'bin', tmp_path / 'ssh-called', tmp_path / 'x'
    bin_dir.mkdir()
    (bin_dir / 'ssh').write_text(f'#!/bin/sh\necho "$@" >> {called}\n')
    (bin_dir / 'ssh').chmod(0o755)
    hosts = tmp_path / 'hosts'
    hosts.write_text(f'-oProxyCommand=touch {marker}\n')
    result = run_cli('launch', '-n', 1, '--hosts', hosts, '--', 'touch', marker,
                     env={'PATH': f'{bin_dir}:{os.environ["PATH"]}'})
    assert result.returncode == 2
    assert result.stderr == (f"vgg: error: hosts file {hosts} line 1: host '-oProxyCommand=touch "
                             f"{marker}' is not an IPv4 address such as 10.0.0.2 (ps-lite binds "
                             "to the hosts' addresses: no host names, user names or options)\n")
    assert result.stdout == '' and not called.exists() and not marker.exists()
