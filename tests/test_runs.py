"""Run directories through the command line: layout, --force, resume after SIGKILL, Ctrl-C."""
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

import vgg
from helpers import QUICK, REPO, make_run, run_cli, small_cnn, start_cli, write_dataset
from vgg.base import atomic_write
from vgg.config import RunConfig
from vgg.runs import Run

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
    assert files_of(out) == ['.lock', 'checkpoints/epoch-0002.params',
                             'checkpoints/epoch-0002.states', 'config.json', 'history.png',
                             'metrics.jsonl']
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
    # The last epoch's line holds its checkpoint's checksums (the earlier checkpoint is gone).
    assert 'checkpoint' not in saved[0] and set(saved[1]['checkpoint']) == {'params', 'states'}
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


# --- faults: a full disk, a second writer, substituted or hand-edited files -------------

@pytest.fixture
def small_disk(tmp_path):
    """A 100 MB tmpfs: room for one checkpoint of the quick network (67 MB), not two."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=100m', 'tmpfs', str(mount)],
                      capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    yield mount
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_keeps_the_last_good_epoch(fashion_dir, small_disk, capsys):
    out = str(small_disk / 'run')
    settings = {'resize': 32, 'ratio': 16, 'batch_size': 32, 'epochs': 2, 'seed': 0}
    with pytest.raises(OSError) as error:
        vgg.fit(settings, out, ctx='cpu', data_dir=fashion_dir, progress=False)
    message = str(error.value)
    assert message.startswith(f'cannot write {out}/checkpoints/epoch-0002.params: ')
    assert 'MB free in' in message and 'unchanged' in message and '\n' not in message
    run = Run(out)
    assert epochs_of(out) == [1]
    assert not [name for name in files_of(out) if name.endswith('.tmp')]
    # The epoch that was saved is whole: it loads (its checksum is checked first).
    vgg.load_net(out, 'cpu')
    assert run.history()[0]['checkpoint']['params']


def test_one_writer_per_run_directory(fashion_dir, tmp_path):
    run = make_run(tmp_path / 'run', done=1, data_dir=fashion_dir)
    with run.lock():
        result = run_cli('train', '--resume', '--out', run.path, '--ctx', 'cpu')
        assert result.returncode == 2 and 'Traceback' not in result.stderr
        assert result.stderr.strip() == (
            f'vgg: error: {run.path} is being written by another process (pid {os.getpid()}); '
            'wait for it to end, stop it, or train into another folder')
        # The holder itself may not take it twice either (a second fit in a notebook).
        with pytest.raises(ValueError, match='being written by another process'):
            vgg.fit(None, run.path, resume=True)
    assert epochs_of(run.path) == [1]


def test_a_killed_writer_leaves_the_run_free(tmp_path):
    run = Run(str(tmp_path / 'run'))
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]); '
         'from vgg.runs import Run; lock = Run(sys.argv[2]).lock(); lock.__enter__(); '
         'print("held", flush=True); time.sleep(60)', REPO, run.path],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(ValueError, match=f'pid {holder.pid}'):
        with run.lock():
            pass
    holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock
    holder.wait()
    with run.lock():
        pass


@pytest.mark.parametrize('kind', ['params', 'states'])
def test_a_replaced_or_corrupted_checkpoint_is_refused_before_loading(fashion_dir, tmp_path,
                                                                      kind):
    run = make_run(tmp_path / 'run', done=2, data_dir=fashion_dir)
    path = run.checkpoint(2)[kind]
    if kind == 'params':  # a well-formed file, but another run's
        other = make_run(tmp_path / 'other', done=2, data_dir=fashion_dir)
        with open(other.checkpoint(2)[kind], 'rb') as source, open(path, 'wb') as target:
            target.write(source.read())
    else:  # plain SGD's states are the same in every run: damage this one instead
        with open(path, 'ab') as f:
            f.write(b'\0')
    message = f'checkpoint {path} is not the file epoch 2 saved'
    with pytest.raises(ValueError, match=re.escape(message)):
        vgg.fit(None, run.path, resume=True, ctx='cpu')
    if kind == 'params':
        result = run_cli('evaluate', run.path, '--ctx', 'cpu')
        assert result.returncode == 2 and message in result.stderr


def test_a_last_epoch_without_its_checksum_is_refused(fashion_dir, tmp_path):
    run = make_run(tmp_path / 'run', done=1, data_dir=fashion_dir)
    line = json.loads(open(run.file('metrics.jsonl')).read())
    del line['checkpoint']
    _edit_metrics(run, json.dumps(line) + '\n')
    with pytest.raises(ValueError, match='records no checksum of the params checkpoint of epoch 1'):
        vgg.load_net(run.path, ctx='cpu')


def _edit_metrics(run, text):
    with open(run.file('metrics.jsonl'), 'w') as f:
        f.write(text)


def _edit_config(run, **fields):
    record = json.loads(open(run.file('config.json')).read())
    record.update(fields)
    with open(run.file('config.json'), 'w') as f:
        json.dump(record, f)


@pytest.mark.parametrize('edit, message', [
    (lambda run: _edit_metrics(run, '{"epoch": 1}\n'), 'metrics.jsonl is corrupt at line 1'),
    (lambda run: _edit_metrics(run, '{"epoch": 1, "loss": "low", "train_acc": 0.1, '
                                    '"test_acc": 0.1, "time": 1, "images_per_sec": 1}\n'),
     'metrics.jsonl is corrupt at line 1'),
    (lambda run: _edit_metrics(run, '{"epoch": 1, "loss": 1, "train_acc": 0.1, "test_acc": 0.1, '
                                    '"time": 1, "images_per_sec": 1, "points": [{"epoch": 1}]}\n'),
     'metrics.jsonl is corrupt at line 1'),
    (lambda run: _edit_config(run, data_dir=5), 'data_dir must be a folder name, got 5'),
    (lambda run: _edit_config(run, lr='fast'), "lr must be a number, got 'fast'"),
    (lambda run: _edit_config(run, arch='vgg12'), "unknown architecture 'vgg12'"),
    (lambda run: _edit_config(run, seed=4294967295), 'seed must be between 0 and 2147483647'),
])
def test_hand_edited_run_files_are_refused_with_one_line(fashion_dir, tmp_path, edit, message):
    run = make_run(tmp_path / 'run', done=1, data_dir=fashion_dir)
    edit(run)
    with pytest.raises(ValueError, match=re.escape(message)):
        vgg.fit(None, run.path, resume=True, ctx='cpu')


def test_resumable_is_a_readable_run_of_the_same_settings_with_an_epoch_done(tmp_path):
    run = make_run(tmp_path / 'run', done=1)
    config = run.config()
    assert run.resumable(config)
    assert run.resumable(dataclasses.replace(config, epochs=5))  # epochs may grow
    assert not run.resumable(dataclasses.replace(config, lr=0.01))
    assert not run.resumable(dataclasses.replace(config, resize=64))
    assert not Run(str(tmp_path / 'none')).resumable(config)
    assert not make_run(tmp_path / 'started', done=0).resumable(config)  # nothing to continue
    assert not make_run(tmp_path / 'past', done=2).resumable(dataclasses.replace(config, epochs=1))
    with open(run.file('metrics.jsonl'), 'a') as f:
        f.write('{broken\n')
    assert not run.resumable(config)


def test_sessions_are_the_machines_each_session_ran_on(tmp_path):
    run = make_run(tmp_path / 'run', done=1)
    assert [s['from_epoch'] for s in run.sessions()] == [0]
    run.add_session(None, {'cpu': 'test CPU', 'isa': [], 'cores': 1})
    assert [(s.get('cpu'), s['from_epoch']) for s in run.sessions()][-1] == ('test CPU', 1)


# --- links out of the run directory ---------------------------------------------------

def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (links followed)."""
    return {name: open(os.path.join(folder, name), 'rb').read() for name in files_of(folder)}


def link_folder(run, name, target):
    """Make ``run``'s folder ``name`` a symbolic link to ``target``, moving its files there."""
    os.makedirs(target, exist_ok=True)
    if os.path.isdir(run.file(name)):
        for entry in os.listdir(run.file(name)):
            os.replace(run.file(name, entry), os.path.join(target, entry))
        os.rmdir(run.file(name))
    os.symlink(target, run.file(name))


@pytest.fixture
def shared_checkpoints(tmp_path):
    """Two runs whose checkpoints/ are links to one folder: 'a' has done epoch 1, 'b' epoch 2,
    so the folder holds a's epoch-0001 and b's epoch-0002."""
    shared = str(tmp_path / 'shared')
    runs = {name: make_run(tmp_path / name, done=done) for name, done in (('a', 1), ('b', 2))}
    for run in runs.values():
        link_folder(run, 'checkpoints', shared)
    return runs['a'], runs['b'], shared


LINKED = 'is a symbolic link (to {target}), and a run writes and removes files in its {name} folder'


@pytest.mark.parametrize('settings, mode', [
    (None, {'resume': True}),
    ({'epochs': 3}, {'resume': True}),
    ({'resize': 32, 'ratio': 16, 'batch_size': 32}, {'force': True}),
], ids=['resume', 'resume-more-epochs', 'force'])
def test_a_run_never_writes_or_deletes_through_a_linked_checkpoints_folder(
        shared_checkpoints, fashion_dir, settings, mode):
    a, b, shared = shared_checkpoints
    before = snapshot(shared)
    with pytest.raises(ValueError, match=re.escape(LINKED.format(target=shared,
                                                                 name='checkpoints'))):
        vgg.fit(settings, a.path, ctx='cpu', data_dir=fashion_dir, progress=False, **mode)
    assert snapshot(shared) == before and epochs_of(b.path) == [1, 2]
    assert epochs_of(a.path) == [1]  # refused before anything of a was touched either


def test_clear_and_checkpoint_rotation_never_delete_through_a_link(shared_checkpoints, tmp_path):
    a, b, shared = shared_checkpoints
    before = snapshot(shared)
    with pytest.raises(ValueError, match='is a symbolic link'):
        a.clear()
    # Saving epoch 2 of a would replace b's epoch-0002 and then remove a's epoch-0001.
    net, trainer = _tiny_net_and_trainer()
    history = [dict(h, epoch=e) for e, h in enumerate(a.history() * 2, 1)]
    with pytest.raises(ValueError, match='is a symbolic link'):
        a.save_epoch(net, trainer, history)
    assert snapshot(shared) == before and a.exists() and epochs_of(a.path) == [1]
    # A folder that only holds a link is no place for a new run either.
    new = Run(str(tmp_path / 'new'))
    os.makedirs(new.path)
    os.symlink(shared, new.file('checkpoints'))
    with pytest.raises(ValueError, match='is a symbolic link'):
        new.prepare()
    assert snapshot(shared) == before and not new.exists()


def test_a_linked_lock_file_is_refused(tmp_path):
    other = make_run(tmp_path / 'other', done=0)
    run = make_run(tmp_path / 'run', done=0)
    os.symlink(other.file('.lock'), run.file('.lock'))
    with pytest.raises(ValueError, match=re.escape(f'{run.file(".lock")} is a symbolic link')):
        with run.lock():
            pass
    with other.lock():  # the other run's lock was not taken, nor written
        pass


@pytest.mark.slow
def test_linked_folders_are_one_line_and_exit_2(shared_checkpoints, tmp_path):
    a, b, shared = shared_checkpoints
    before = snapshot(shared)
    result = run_cli('train', '--resume', '--out', a.path, '--epochs', '3', '--ctx', 'cpu')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip() == (
        f'vgg: error: {a.file("checkpoints")} '
        + LINKED.format(target=shared, name='checkpoints')
        + ', which must be its own: replace the link by a folder (to keep a run on another '
          'disk, link the run directory itself)')
    # An export folder shared with another run: refused before anything is written into it.
    c = make_run(tmp_path / 'c', done=1)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'vgg-symbol.json').write_text('another run\'s')
    link_folder(c, 'export', str(elsewhere))
    result = run_cli('export', c.path, '--no-onnx')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert LINKED.format(target=elsewhere, name='export') in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(str(elsewhere)) == {'vgg-symbol.json': b"another run's"}
    assert snapshot(shared) == before


def _tiny_net_and_trainer():
    net = small_cnn()
    net.initialize()
    net(nd.zeros((1, 1, 28, 28)))
    return net, gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1})


# --- reading a run while it trains ----------------------------------------------------

# Saves epochs 1..N of a tiny network as fast as it can; every parameter of epoch k holds k.
WRITER = '''
import sys
sys.path.insert(0, sys.argv[1])
from helpers import small_cnn
from mxnet import gluon, nd
from vgg.config import RunConfig
from vgg.runs import Run

run, epochs = Run(sys.argv[2]), int(sys.argv[3])
run.prepare()
run.start(RunConfig(epochs=epochs))
net = small_cnn()
net.initialize()
net(nd.zeros((1, 1, 28, 28)))
trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1})
history = []
for epoch in range(1, epochs + 1):
    for param in net.collect_params().values():
        param.set_data(nd.full(param.shape, epoch))
    history.append({'epoch': epoch, 'loss': 1.0, 'train_acc': 0.5, 'test_acc': 0.5,
                    'time': 0.1, 'images_per_sec': 1.0})
    run.save_epoch(net, trainer, history)
    if epoch == 1:
        print('saved', flush=True)
'''


def test_loading_while_the_run_saves_epochs_gives_a_whole_checkpoint(tmp_path):
    run = Run(str(tmp_path / 'run'))
    writer = subprocess.Popen([sys.executable, '-c', WRITER, os.path.join(REPO, 'tests'),
                               run.path, '150'], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == 'saved'
    net, _ = _tiny_net_and_trainer()
    loads, failures = [], []
    while writer.poll() is None:
        try:
            epoch = run.load_params(net)
        except (ValueError, OSError) as err:  # were: missing, truncated or corrupt, ENOENT
            failures.append(str(err))
            continue
        values = {float(v) for p in net.collect_params().values()
                  for v in np.unique(p.data().asnumpy())}
        loads.append((epoch, values))
    assert writer.wait() == 0
    assert failures == []
    # Every load is the whole checkpoint of the epoch it names, and epochs only go forward.
    assert all(values == {float(epoch)} for epoch, values in loads)
    assert [epoch for epoch, _ in loads] == sorted(epoch for epoch, _ in loads)
    assert len(loads) >= 20 and len({epoch for epoch, _ in loads}) >= 10
