import json
import os
import re
import resource
import subprocess
import sys

import pytest
from PIL import Image

from helpers import QUICK, REPO, make_run, run_cli, write_dataset
from vgg.cli import COMMANDS, main

EPOCH_LINE = re.compile(r'epoch (\d), loss (\d+\.\d{4}), train acc (\d\.\d{3}), '
                        r'test acc (\d\.\d{3}), time \d+\.\d sec')


@pytest.mark.slow
def test_train_prints_the_chapter_lines(fashion_dir):
    result = run_cli('--epochs', '2', '--resize', '32', '--batch-size', '32', '--ctx', 'cpu',
                     '--data-dir', fashion_dir, '--seed', '1', '--no-progress')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'training on cpu(0)'
    assert [EPOCH_LINE.fullmatch(line).group(1) for line in lines[1:]] == ['1', '2']


def test_train_curves_prints_the_points_between_the_epoch_lines(fashion_dir, capsys):
    # 96 training images in batches of 32: three points an epoch, at a third, two thirds, the end.
    assert main(['train', '--epochs', '2', '--resize', '32', '--ratio', '16', '--batch-size', '32',
                 '--ctx', 'cpu', '--data-dir', fashion_dir, '--seed', '1', '--no-progress',
                 '--curves']) == 0
    lines = capsys.readouterr().out.splitlines()
    point = re.compile(r'  epoch (\d\.\d\d): loss \d+\.\d{4}, train acc \d\.\d{3}, lr 0\.05')
    assert [point.fullmatch(line).group(1) if point.fullmatch(line) else
            EPOCH_LINE.fullmatch(line).group(1) for line in lines[1:]] == \
        ['0.33', '0.67', '1.00', '1', '1.33', '1.67', '2.00', '2']


@pytest.mark.parametrize('command', [None] + sorted(COMMANDS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main(([command] if command else []) + ['--help'])
    assert stop.value.code == 0
    assert 'usage: vgg' in capsys.readouterr().out


def test_predict_help_states_the_colour_convention(capsys):
    with pytest.raises(SystemExit):
        main(['predict', '--help'])
    assert 'light object on a black background' in ' '.join(capsys.readouterr().out.split())


def test_mistyped_command_is_exit_2_naming_the_commands(monkeypatch, capsys):
    """``vgg trian`` is not taken for ``vgg train trian``: one line, exit 2, nothing trained."""
    def no_training(*args, **kwargs):
        raise AssertionError('vgg trian started training')
    monkeypatch.setattr('vgg.cli.fit', no_training)
    with pytest.raises(SystemExit) as stop:
        main(['trian', '--epochs', '1'])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("vgg: error: unknown command 'trian'")
    assert "did you mean 'train'?" in lines[0]
    named = lines[0].split('the commands are ')[1]
    assert named.split(', ') == list(COMMANDS)
    assert sorted(COMMANDS) == ['evaluate', 'export', 'launch', 'predict', 'summary', 'train']


@pytest.mark.slow
def test_summary_prints_the_table_and_totals():
    result = run_cli('summary', '--arch', 'vgg11', '--ratio', '16', '--resize', '32')
    assert result.returncode == 0, result.stderr
    assert re.search(r'^Total +16,993,658 ', result.stdout, re.M)  # the Dense layers dominate
    assert result.stdout.count('Conv2D') == 8 and 'Input shape: (1, 1, 32, 32)' in result.stdout
    bn = run_cli('summary', '--arch', 'vgg11_bn', '--ratio', '16', '--resize', '32')
    assert bn.returncode == 0, bn.stderr
    assert bn.stdout.count('BatchNorm') == 8 and bn.stdout.count('Conv2D') == 8


@pytest.mark.slow
def test_same_seed_same_first_epoch(fashion_dir):
    """Two CPU runs with one seed print the same numbers; another seed other ones."""
    lines = []
    for seed in (3, 3, 4):
        result = run_cli('train', *QUICK, '--epochs', '1', '--seed', seed, '--no-progress',
                         '--data-dir', fashion_dir)
        assert result.returncode == 0, result.stderr
        lines.append(EPOCH_LINE.fullmatch(result.stdout.splitlines()[-1]).groups())
    assert lines[0] == lines[1] and lines[2] != lines[0]


# Bad inputs.  Each case's setup(tmp_path, data_dir) returns the values of the
# placeholders in its arguments (and {tmp} is the test's folder).
def _data(tmp, data):
    return {'data': data}


def _run(tmp, data, **settings):
    return {'data': data, 'run': make_run(tmp / 'run', data_dir=data, **settings).path}


def _damaged(kind, damage, checksums=True):
    """A run whose checkpoint file is damaged; ``checksums`` False also takes the checksums out
    of metrics.jsonl (an edited file), which is refused before any checkpoint is read."""
    def setup(tmp, data):
        places = _run(tmp, data)
        damage(os.path.join(places['run'], 'checkpoints', f'epoch-0001.{kind}'))
        if not checksums:
            metrics = os.path.join(places['run'], 'metrics.jsonl')
            lines = [json.loads(line) for line in open(metrics)]
            with open(metrics, 'w') as f:
                f.writelines(json.dumps(dict(line, checkpoint=None)) + '\n' for line in lines)
        return places
    return setup


def _truncate(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


def _corrupt_config(tmp, data):
    places = _run(tmp, data)
    with open(os.path.join(places['run'], 'config.json'), 'w') as f:
        f.write('{"arch": "vgg11", ')
    return places


def _truncated_data(tmp, data):
    directory = tmp / 'truncated'
    write_dataset(directory)
    path = directory / 'train-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:200])
    return {'data': directory}


def _file(tmp, data):
    (tmp / 'file').write_text('not a folder')
    return {'data': data, 'file': tmp / 'file'}


def _run_and_image(tmp, data, done=1):
    Image.new('L', (28, 28)).save(tmp / 'black.png')
    return dict(_run(tmp, data, done=done), image=tmp / 'black.png')


def _fifo(tmp, data):
    os.mkfifo(tmp / 'camera.png')  # no writer: opening it for reading would wait forever
    return dict(_run(tmp, data), image=tmp / 'camera.png')


def _not_image(tmp, data):
    (tmp / 'notes.png').write_text('not an image')
    return dict(_run(tmp, data), image=tmp / 'notes.png')


TRAIN = ['train', *QUICK, '--no-progress', '--data-dir', '{data}']
BAD_INPUTS = [
    ('arch', _data, TRAIN + ['--arch', 'vgg12'], "invalid choice: 'vgg12'"),
    ('ratio', _data, TRAIN + ['--ratio', '100'],
     'ratio 100.0 leaves a block with 0 channels; use a ratio of at most 64'),
    ('resize', _data, TRAIN + ['--resize', '16'],
     'resize 16 is too small: 5 pooling blocks need at least 32 pixels'),
    ('summary-resize', _data, ['summary', '--resize', '8'], 'need at least 32 pixels'),
    ('summary-too-large', _data, ['summary', '--ratio', '0.001'],
     "block 1's convolution weight would hold"),
    ('ctx-id-too-large', _data, TRAIN + ['--ctx', 'cpu:2147483648'], 'must be below 64'),
    ('seed-too-large', _data, TRAIN + ['--seed', '4294967295'],
     'seed must be between 0 and 2147483647'),
    ('model-zoo-offline', _data, TRAIN + ['--from-model-zoo', 'vgg11', '--ratio', '1',
                                          '--params', '{data}/none.params'],
     'model zoo parameters {data}/none.params not found'),
    ('init-from-nothing', _data, TRAIN + ['--init-from', '{data}/no-run'],
     '{data}/no-run holds no run (config.json is missing)'),
    ('epochs', _data, TRAIN + ['--epochs', '0'], 'argument --epochs: must be positive, got 0'),
    ('batch-size', _data, TRAIN + ['--batch-size', '-2'], 'must be positive, got -2'),
    ('not-a-number', _data, TRAIN + ['--batch-size', 'x'],
     "argument --batch-size: 'x' is not a number"),
    ('lr', _data, TRAIN + ['--lr', '-1'], 'argument --lr: must be positive, got -1'),
    ('lr-too-large', _data, TRAIN + ['--lr', '1e39'],
     'argument --lr: 1e+39 is too large (float32 holds at most 3.4e+38)'),
    ('ctx', _data, TRAIN + ['--ctx', 'tpu'], "unknown device 'tpu'"),
    ('missing-data', _data, ['train', *QUICK, '--data-dir', '{data}/none'],
     'Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz'),
    ('truncated-data', _truncated_data, TRAIN,
     'train-images-idx3-ubyte.gz: not a complete gzip file'),
    ('diverging-loss', _data, TRAIN + ['--lr', '1e38', '--out', '{tmp}/diverged'],
     re.compile(r'loss became (inf|nan) in epoch 1, batch \d+; lower the learning rate '
                r'\(it is 1e\+38\); 0 of 3 epochs are saved')),
    ('out-not-writable', _file, TRAIN + ['--out', '{file}/run'],
     'cannot write to output directory {file}/run: Not a directory'),
    ('run-exists', _run, TRAIN + ['--out', '{run}'],
     'already holds a run (1 of 3 epochs done); continue it with --resume '
     'or start it over with --force'),
    ('resume-nothing', _data, TRAIN + ['--resume', '--out', '{data}/none'],
     'holds no run (config.json is missing)'),
    ('resume-without-out', _data, TRAIN + ['--resume'],
     '--resume needs --out DIR, the run directory to continue'),
    ('resume-and-force', _data, TRAIN + ['--resume', '--force', '--out', '{data}'],
     'not allowed with argument'),
    ('resume-conflict', _run, TRAIN + ['--resume', '--out', '{run}', '--batch-size', '64'],
     "batch_size 64 conflicts with the run's batch_size 32; keep it to resume, or start a new "
     'run ({run})'),
    ('resume-fewer-epochs', lambda tmp, data: _run(tmp, data, done=2),
     ['train', '--resume', '--out', '{run}', '--epochs', '1'],
     'epochs 1 is fewer than the 2 epochs already done'),
    ('truncated-states', _damaged('states', _truncate), ['train', '--resume', '--out', '{run}'],
     'checkpoint {run}/checkpoints/epoch-0001.states is not the file epoch 1 saved'),
    ('truncated-states-no-checksum', _damaged('states', _truncate, checksums=False),
     ['train', '--resume', '--out', '{run}'],
     'metrics.jsonl records no checksum of the params checkpoint of epoch 1, so '
     '{run}/checkpoints/epoch-0001.params is not loaded'),
    ('missing-checkpoint', _damaged('params', os.remove), ['evaluate', '{run}'],
     'checkpoint {run}/checkpoints/epoch-0001.params is missing (metrics.jsonl records epoch 1 '
     'as done)'),
    ('truncated-checkpoint', _damaged('params', _truncate), ['evaluate', '{run}'],
     'checkpoint {run}/checkpoints/epoch-0001.params is not the file epoch 1 saved'),
    ('truncated-checkpoint-no-checksum', _damaged('params', _truncate, checksums=False),
     ['evaluate', '{run}'],
     'metrics.jsonl records no checksum of the params checkpoint of epoch 1, so '
     '{run}/checkpoints/epoch-0001.params is not loaded'),
    ('mismatched-checkpoint', lambda tmp, data: _run(tmp, data, params_arch='vgg13'),
     ['export', '{run}'], "does not fit the run's network (vgg11, ratio 16)"),
    ('no-epoch-done', lambda tmp, data: _run_and_image(tmp, data, done=0),
     ['predict', '{run}', '{image}'],
     'has no completed epoch yet'),
    ('corrupt-config', _corrupt_config, ['evaluate', '{run}'], 'config.json is corrupt'),
    ('not-an-image', _not_image, ['predict', '{run}', '{image}'],
     'notes.png: not an image that can be read (cannot identify image file'),
    ('missing-image', _run, ['predict', '{run}', '{data}/none.png'],
     'none.png: not an image that can be read (No such file or directory)'),
    ('fifo-image', _fifo, ['predict', '{run}', '{image}'],
     'camera.png: not an image that can be read (a FIFO, not a regular file)'),
    ('folder-image', _run, ['predict', '{run}', '{tmp}'],
     'not an image that can be read (a directory, not a regular file)'),
]


@pytest.mark.slow
@pytest.mark.parametrize('setup,args,message', [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(fashion_dir, tmp_path, setup, args, message):
    places = dict(setup(tmp_path, fashion_dir), tmp=tmp_path)
    result = run_cli(*[arg.format(**places) for arg in args],
                     env={'VGG_FASHION_MNIST_MIRROR': 'http://127.0.0.1:9/'})
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('vgg')]
    expected = message if isinstance(message, re.Pattern) else \
        re.compile(re.escape(message.format(**places)))
    assert len(errors) == 1 and expected.search(errors[0]), errors


# The peak virtual memory (bytes) of a process with MXNet's engine and threads at work.
BASELINE_MEMORY = '''
import vgg
import mxnet as mx
from vgg.model import build_net
build_net('vgg11', 16, 32)
mx.nd.waitall()
with open('/proc/self/status') as f:
    print(next(int(line.split()[1]) for line in f if line.startswith('VmPeak:')) * 1024)
'''


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads VmPeak from /proc')
def test_running_out_of_memory_is_one_line_naming_what_to_lower(fashion_dir, tmp_path):
    baseline = subprocess.run([sys.executable, '-c', BASELINE_MEMORY], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert baseline.returncode == 0, baseline.stderr
    limit = int(baseline.stdout) + (1 << 30)  # as ulimit -v or a container sets it
    out = tmp_path / 'run'
    # 224x224 images at ratio 4 in batches of 96: a training step needs several GB more.
    result = subprocess.run(
        [sys.executable, '-m', 'vgg', 'train', '--resize', '224', '--ratio', '4',
         '--batch-size', '96', '--epochs', '1', '--ctx', 'cpu', '--no-progress',
         '--data-dir', fashion_dir, '--out', str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in result.stderr, lines
    assert re.fullmatch(r'vgg: error: out of memory \(.+\) with batch size 96, resize 224 and '
                        r'ratio 4: lower --batch-size or --resize, or raise --ratio \(fewer '
                        r'channels\); 0 of 1 epochs are saved in ' + re.escape(str(out)),
                        lines[0]), lines[0]
    assert json.loads((out / 'config.json').read_text())['batch_size'] == 96
