"""Shared fixtures: small synthetic Fashion-MNIST folders and tiny networks."""
import gzip
import os
import struct

import numpy as np
import pytest

import vgg  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'fashion-mnist')


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 images (N, 28, 28) or labels (N,) as an IDX file."""
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 3:
        header = struct.pack('>IIII', 2051, array.shape[0], array.shape[1], array.shape[2])
    else:
        header = struct.pack('>II', 2049, array.shape[0])
    return header + array.tobytes()


def synthetic_split(num: int, seed: int = 0):
    """Learnable images: class k is a bright 6x6 square at a class-specific place, plus noise."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, num).astype(np.uint8)
    images = rng.randint(0, 60, (num, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + 12 * row:10 + 12 * row, 1 + 5 * col:7 + 5 * col] = 255
    return images, labels


def write_dataset(directory, num_train=96, num_test=40, compress=True, seed=0):
    """Write the four IDX files (gzip or raw) of a synthetic set; return their arrays."""
    os.makedirs(directory, exist_ok=True)
    arrays = {'train': synthetic_split(num_train, seed), 'test': synthetic_split(num_test, seed + 1)}
    names = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
    for split, (images, labels) in arrays.items():
        for name, array in zip(names[split], (images, labels)):
            data = idx_bytes(array)
            if compress:
                with gzip.open(os.path.join(directory, name + '.gz'), 'wb') as f:
                    f.write(data)
            else:
                with open(os.path.join(directory, name), 'wb') as f:
                    f.write(data)
    return arrays


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
