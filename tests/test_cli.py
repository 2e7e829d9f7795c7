import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def run_cli(*args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, '-m', 'vgg', *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_train_prints_the_chapter_lines(fashion_dir):
    result = run_cli('--epochs', '2', '--resize', '32', '--batch-size', '32', '--ctx', 'cpu',
                     '--data-dir', fashion_dir, '--seed', '1', '--no-progress')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'training on cpu(0)'
    assert [re.fullmatch(r'epoch (\d), loss \d+\.\d{4}, train acc \d\.\d{3}, test acc \d\.\d{3}, '
                         r'time \d+\.\d sec', line).group(1) for line in lines[1:]] == ['1', '2']


@pytest.mark.parametrize('args,message', [
    (['--arch', 'vgg12'], "invalid choice: 'vgg12'"),
    (['--ratio', '100'], 'ratio 100.0 leaves a block with 0 channels; use a ratio of at most 64'),
    (['--resize', '16'], '--resize 16 is too small: 5 pooling blocks need at least 32 pixels'),
    (['--epochs', '0'], 'must be positive'),
    (['--lr', '-1'], 'must be positive'),
    (['--batch-size', 'x'], "'x' is not a number"),
    (['--ctx', 'tpu'], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(fashion_dir, args, message):
    result = run_cli(*args, '--data-dir', fashion_dir)
    assert result.returncode == 2
    assert message in result.stderr
    assert 'Traceback' not in result.stderr
    assert len([l for l in result.stderr.splitlines() if l.startswith('vgg')]) == 1


def test_missing_data_offline(isolated_env):
    result = run_cli('--data-dir', str(isolated_env / 'none'), '--resize', '32',
                     env={'VGG_FASHION_MNIST_MIRROR': 'http://127.0.0.1:9/'})
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'Put train-images-idx3-ubyte.gz' in result.stderr
