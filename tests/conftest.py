"""Shared fixtures: small synthetic Fashion-MNIST folders.  The helpers live in helpers.py."""
import os

import pytest

from helpers import SHARED_DATA, write_dataset


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No VGG_DATA_DIR and an empty MXNET_HOME, so only explicit roots are found."""
    monkeypatch.delenv('VGG_DATA_DIR', raising=False)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mxnet-home'))
    return tmp_path


@pytest.fixture
def fashion_dir(isolated_env):
    """A folder with a small synthetic Fashion-MNIST (96 train, 40 test images, gzip)."""
    directory = isolated_env / 'fashion'
    write_dataset(directory)
    return str(directory)


@pytest.fixture(scope='session')
def real_data_dir():
    """The real Fashion-MNIST folder ($VGG_DATA_DIR or ../shared/data/fashion-mnist), else skip."""
    directory = os.environ.get('VGG_DATA_DIR') or SHARED_DATA
    if not os.path.isfile(os.path.join(directory, 'train-images-idx3-ubyte.gz')):
        pytest.skip('real Fashion-MNIST not available; set VGG_DATA_DIR')
    return directory
