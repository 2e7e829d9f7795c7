"""Run directories through the command line: layout, --force, resume after SIGKILL, Ctrl-C."""
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time

import mxnet as mx
import pytest

import vgg
from helpers import QUICK, REPO, make_run, run_cli, start_cli, write_dataset
from vgg.config import RunConfig
from vgg.runs import Run, atomic_write

EPOCH = re.compile(r'epoch (\d+), loss \d+\.\d{4}')


def epochs_of(run_dir):
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        return [json.loads(line)['epoch'] for line in f]


def files_of(run_dir):
    return sorted(os.path.relpath(os.path.join(folder, name), run_dir)
                  for folder, _, names in os.walk(run_dir) for name in names)


@pytest.fixture
def bigger_data(isolated_env):
    """320 training images: 20 batches of 16, so that an epoch lasts a few seconds."""
    directory = isolated_env / 'bigger'
    write_dataset(directory, num_train=320, num_test=32)
    return str(directory)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / 'file.txt'
    target.write_text('old')

    def fail(tmp):
        with open(tmp, 'w') as f:
            f.write('half')
        raise OSError('disk full')
    with pytest.raises(OSError):
        atomic_write(str(target), fail)
    assert target.read_text() == 'old' and os.listdir(tmp_path) == ['file.txt']


@pytest.mark.slow
def test_train_out_writes_the_run_and_force_replaces_it(fashion_dir, tmp_path):
    out = tmp_path / 'run'
    result = run_cli('train', *QUICK, '--epochs', '2', '--seed', '0', '--no-progress',
                     '--data-dir', fashion_dir, '--out', out)
    assert result.returncode == 0, result.stderr
    assert files_of(out) == ['checkpoints/epoch-0002.params', 'checkpoints/epoch-0002.states',
                             'config.json', 'history.png', 'metrics.jsonl']
    config = json.loads((out / 'config.json').read_text())
    sessions = config.pop('sessions')
    # The flags' settings, the defaults for the others, and the data folder used.
    assert config == dict(RunConfig().to_dict(), arch='vgg11', ratio=16.0, resize=32, epochs=2,
                          batch_size=32, lr=0.05, seed=0, max_samples=None, data_dir=fashion_dir)
    # One session, from epoch 0, on the devices of --ctx, with the versions it ran with.
    assert [(s['from_epoch'], s['ctx']) for s in sessions] == [(0, ['cpu(0)'])]
    assert sessions[0]['versions']['vgg'] == vgg.__version__
    assert sessions[0]['versions']['mxnet'] == mx.__version__
    printed = [float(line.split()[3].rstrip(',')) for line in result.stdout.splitlines()[1:]]
    saved = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [s['epoch'] for s in saved] == [1, 2]
    assert printed == [round(s['loss'], 4) for s in saved]
    assert (out / 'history.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    result = run_cli('train', *QUICK, '--epochs', '1', '--no-progress', '--force',
                     '--data-dir', fashion_dir, '--out', out)
    assert result.returncode == 0, result.stderr
    replaced = json.loads((out / 'config.json').read_text())
    assert epochs_of(out) == [1] and replaced['epochs'] == 1
    assert [s['from_epoch'] for s in replaced['sessions']] == [0]  # the old run's are gone
    assert 'checkpoints/epoch-0001.params' in files_of(out)
    assert 'checkpoints/epoch-0002.params' not in files_of(out)


class StderrWatcher:
    """Collects a process's stderr in a thread, so that a test can wait for a pattern.

    The thread is the only reader of stderr: ``communicate`` would read it too
    and take whatever the process wrote last away from ``text``.
    """

    def __init__(self, process):
        self.text = ''
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for chunk in iter(lambda: stream.read(1), ''):
            self.text += chunk

    def wait_for(self, pattern, process, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(pattern, self.text)
            if match:
                return match
            assert process.poll() is None, f'the run ended early: {self.text[-2000:]}'
            time.sleep(0.05)
        raise AssertionError(f'{pattern!r} did not appear: {self.text[-2000:]}')

    def finish(self, process, timeout=120):
        """Wait for the process to end; return its stdout (stderr is then all in ``text``)."""
        process.wait(timeout)
        stdout = process.stdout.read()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), 'stderr was not closed'
        return stdout


def start_and_stop_in_epoch_2(out, data_dir, epochs, signal_number):
    """Train into ``out`` and send ``signal_number`` while epoch 2 is half done."""
    process = start_cli('train', *QUICK, '--batch-size', '16', '--epochs', epochs, '--seed', '0',
                        '--data-dir', data_dir, '--out', out,
                        # a Ctrl-C must reach Python even where the caller ignores it
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watcher = StderrWatcher(process)
    # The progress bar shows images done in epoch 2, so epoch 1 is committed and 2 is running.
    watcher.wait_for(r'epoch 2: +\d+%\|[^|]*\| *(?!0/)(?!320/)\d+/320', process)
    process.send_signal(signal_number)
    stdout = watcher.finish(process)
    return process.returncode, stdout, watcher.text


@pytest.mark.slow
def test_resume_after_kill_9_counts_every_epoch_once(bigger_data, tmp_path):
    out = tmp_path / 'run'
    code, _, _ = start_and_stop_in_epoch_2(out, bigger_data, 4, signal.SIGKILL)
    assert code == -signal.SIGKILL and epochs_of(out) == [1]

    result = run_cli('train', '--resume', '--out', out, '--no-progress', '--ctx', 'cpu')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f'resuming {out} after epoch 1 of 4'
    assert EPOCH.findall(result.stdout) == ['2', '3', '4']
    assert epochs_of(out) == [1, 2, 3, 4]
    sessions = json.loads((out / 'config.json').read_text())['sessions']
    assert [(s['from_epoch'], s['ctx']) for s in sessions] == [(0, ['cpu(0)']), (1, ['cpu(0)'])]
    assert [f for f in files_of(out) if f.startswith('checkpoints')] == [
        'checkpoints/epoch-0004.params', 'checkpoints/epoch-0004.states']
    assert not [f for f in files_of(out) if f.endswith('.tmp')]


@pytest.mark.slow
def test_ctrl_c_saves_and_prints_the_resume_command(bigger_data, tmp_path):
    out = tmp_path / 'run'
    code, _, stderr = start_and_stop_in_epoch_2(out, bigger_data, 2, signal.SIGINT)
    assert code == 130 and 'Traceback' not in stderr
    # The progress bar may redraw around the message; the message itself is one line.
    messages = re.findall(r'vgg: interrupted; [^\r\n]*', stderr)
    assert len(messages) == 1, stderr
    line = messages[0]
    prefix = f'vgg: interrupted; 1 of 2 epochs are saved in {out}; resume with: '
    assert line.startswith(prefix), line
    assert epochs_of(out) == [1]

    resumed = subprocess.run(shlex.split(line[len(prefix):]) + ['--no-progress'], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert EPOCH.findall(resumed.stdout) == ['2'] and epochs_of(out) == [1, 2]


@pytest.mark.slow
def test_diverging_resumed_run_keeps_the_last_good_checkpoint(fashion_dir, tmp_path):
    run = make_run(tmp_path / 'run', done=1, data_dir=fashion_dir, lr=1e38)
    result = run_cli('train', '--resume', '--out', run.path, '--no-progress', '--ctx', 'cpu')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert re.search(r'loss became (inf|nan) in epoch 2, batch \d+; .* 1 of 3 epochs are saved in',
                     result.stderr)
    assert epochs_of(run.path) == [1] and os.path.exists(run.checkpoint(1)['params'])


@pytest.mark.slow
def test_resume_extends_a_finished_run(fashion_dir, tmp_path):
    run = make_run(tmp_path / 'run', done=3, data_dir=fashion_dir)
    done = run_cli('train', '--resume', '--out', run.path)
    assert done.returncode == 0 and 'all 3 epochs are done' in done.stdout
    result = run_cli('train', '--resume', '--out', run.path, '--epochs', '4', '--no-progress',
                     '--ctx', 'cpu')
    assert result.returncode == 0, result.stderr
    assert EPOCH.findall(result.stdout) == ['4'] and epochs_of(run.path) == [1, 2, 3, 4]
    assert Run(run.path).config().epochs == 4
