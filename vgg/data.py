"""Fashion-MNIST: finding, verifying, downloading and batching it.

The dataset is kept in memory as one uint8 array per split (47 MB for the
training set).  Batches are cut from it by index, converted to float32 in
[0, 1] and resized as a whole batch with one bilinear operator, which gives
gluonbook's images (per-image OpenCV resize, then ToTensor) to within one
grey level without a worker pool.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import hashlib
import numbers
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import nd

from .base import NUM_CLASSES, check_positive, file_digest

TEXT_LABELS = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat',
               'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot']

SPLITS = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
FILE_NAMES = [name for pair in SPLITS.values() for name in pair]

# md5 of Zalando's official gzip files (the release's README).
OFFICIAL_MD5 = {
    'train-images-idx3-ubyte.gz': '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
    'train-labels-idx1-ubyte.gz': '25c81989df183df01b3e8a0aad5dffbe',
    't10k-images-idx3-ubyte.gz': 'bef4ecab320f06d8554ea6380940ec79',
    't10k-labels-idx1-ubyte.gz': 'bb300cfdad3c16e7a12a480ee83cd310',
}
# sha1 of MXNet's mirror copies (the ones gluon.data.vision.FashionMNIST checks).
MXNET_MIRROR_SHA1 = {
    'train-images-idx3-ubyte.gz': '0cf37b0d40ed5169c6b3aba31069a9770ac9043d',
    'train-labels-idx1-ubyte.gz': '236021d52f1e40852b06a4c3008d8de8aef1e40b',
    't10k-images-idx3-ubyte.gz': '626ed6a7c06dd17c0eec72fa3be1740f146a2863',
    't10k-labels-idx1-ubyte.gz': '17f9ab60e7257a1620f4ad76bbbaf857c3920701',
}
DEFAULT_MIRROR = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
DATA_DIR_ENV = 'VGG_DATA_DIR'
DOWNLOAD_DEADLINE = 600.0  # seconds a file may take to arrive in all (26 MB at 45 kB/s)
# A mirror sending less than this (bytes per second, over the window's seconds) is cut off
# before the deadline, as curl's --speed-limit and --speed-time do.
DOWNLOAD_MIN_RATE = 10_000.0
DOWNLOAD_RATE_WINDOW = 30.0
LOCK_POLL = 0.2  # seconds between tries for a file that another process is downloading
MIRROR_ENV = 'VGG_FASHION_MNIST_MIRROR'

_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


class DataError(ValueError):
    """A Fashion-MNIST file is missing, corrupt or not what it claims to be."""


def candidate_dirs(root: Optional[str] = None) -> List[str]:
    """Where the data is looked for, in order: ``root``, ``$VGG_DATA_DIR``, gluon's usual place."""
    if root is not None:
        root = _folder('root', root)
    mxnet_home = os.environ.get('MXNET_HOME', os.path.join('~', '.mxnet'))
    dirs = [root, os.environ.get(DATA_DIR_ENV),
            os.path.join(mxnet_home, 'datasets', 'fashion-mnist')]
    return [os.path.abspath(os.path.expanduser(d)) for d in dirs if d]


def _folder(name: str, value: Any) -> str:
    """``value`` as a path string; ValueError naming ``name`` unless it is a str or os.PathLike."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise ValueError(f'{name} must be a folder path (a str or os.PathLike), got {value!r}')
    return path


def _find_file(directory: str, name: str) -> Optional[str]:
    for candidate in (name + '.gz', name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_files(root: Optional[str] = None) -> Optional[Dict[str, str]]:
    """Paths of the four files in the first candidate directory that holds them all, else None."""
    for directory in candidate_dirs(root):
        paths = {name: _find_file(directory, name) for name in FILE_NAMES}
        if all(paths.values()):
            return paths
    return None


def _read_bytes(path: str) -> bytes:
    if not path.endswith('.gz'):
        with open(path, 'rb') as f:
            return f.read()
    try:
        with gzip.open(path, 'rb') as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f'{path}: not a complete gzip file ({err}); '
                        'delete it and download it again') from None


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzip or raw) of Fashion-MNIST images or labels, checking its structure.

    Returns
    -------
    numpy.ndarray
        uint8 images of shape (N, 28, 28) or uint8 labels of shape (N,).

    Raises
    ------
    DataError
        If the magic number, the sizes or the labels are wrong, or the file is truncated.
    """
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f'{path}: too short to be an IDX file ({len(data)} bytes)')
    magic, count = struct.unpack('>II', data[:8])
    if magic == _IMAGE_MAGIC:
        if len(data) < 16:
            raise DataError(f'{path}: image header is truncated')
        rows, cols = struct.unpack('>II', data[8:16])
        if (rows, cols) != (28, 28):
            raise DataError(f'{path}: images are {rows}x{cols}, Fashion-MNIST images are 28x28')
        expected, offset, shape = 16 + count * 784, 16, (count, 28, 28)
    elif magic == _LABEL_MAGIC:
        expected, offset, shape = 8 + count, 8, (count,)
    else:
        raise DataError(f'{path}: wrong magic number {magic} (expected {_IMAGE_MAGIC} for '
                        f'images or {_LABEL_MAGIC} for labels); this is not a Fashion-MNIST '
                        'IDX file')
    if len(data) != expected:
        raise DataError(f'{path}: header says {count} items ({expected} bytes) '
                        f'but the data has {len(data)} bytes; the file is truncated or corrupt')
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
    if magic == _LABEL_MAGIC and count and array.max() >= NUM_CLASSES:
        raise DataError(f'{path}: label {int(array.max())} is outside 0..9')
    return array


def _check_split(paths: Tuple[str, str], images: np.ndarray, labels: np.ndarray) -> None:
    if images.ndim != 3:
        raise DataError(f'{paths[0]}: holds labels where images were expected')
    if labels.ndim != 1:
        raise DataError(f'{paths[1]}: holds images where labels were expected')
    if len(images) != len(labels):
        raise DataError(f'{paths[0]} has {len(images)} images but {paths[1]} has '
                        f'{len(labels)} labels; the two files do not belong together')


def _locate_files(root: Optional[str], download: bool, mirror: Optional[str]) -> Dict[str, str]:
    paths = find_files(root)
    if paths is None:
        if not download:
            raise DataError(_missing_message(root, None, mirror))
        paths = download_fashion_mnist(candidate_dirs(root)[0], mirror=mirror)
    return paths


def load_arrays(root: Optional[str] = None, download: bool = True,
                mirror: Optional[str] = None) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Both splits as uint8 arrays: ``{'train': (images, labels), 'test': (images, labels)}``.

    Looks in :func:`candidate_dirs`; if no directory holds all four files and
    ``download`` is true, downloads them into the first candidate directory.
    """
    return _read_arrays(_locate_files(root, download, mirror))


def _read_arrays(paths: Dict[str, str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    _check_roles(paths)
    arrays = {}
    for split, (image_name, label_name) in SPLITS.items():
        pair = (paths[image_name], paths[label_name])
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        _check_split(pair, images, labels)
        arrays[split] = (images, labels)
    return arrays


def _missing_message(root: Optional[str], reason: Optional[str], mirror: Optional[str]) -> str:
    dirs = candidate_dirs(root)
    names = ', '.join(name + '.gz' for name in FILE_NAMES)
    why = f' and downloading from {mirror or _mirror()} failed ({reason})' if reason else ''
    return (f'Fashion-MNIST not found in {", ".join(dirs)}{why}. '
            f'Put {names} into {dirs[0]} (or point {DATA_DIR_ENV} at the folder that has them)')


def _mirror() -> str:
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)


def download_fashion_mnist(directory: str, mirror: Optional[str] = None,
                           md5s: Optional[Dict[str, str]] = None,
                           deadline: float = DOWNLOAD_DEADLINE,
                           min_rate: float = DOWNLOAD_MIN_RATE,
                           rate_window: float = DOWNLOAD_RATE_WINDOW) -> Dict[str, str]:
    """Download the missing gzip files into ``directory`` and verify their md5.

    Each file is written to a temporary ``.part`` file in ``directory`` and
    renamed only once its checksum matches; a failure removes it.  While a
    process downloads a file it holds a kernel lock (flock) on ``.NAME.gz.lock``
    beside it: another process downloading into the same folder waits for it,
    saying so on one line, and then takes the finished file; a ``.part`` file
    whose lock nobody holds is left by a killed process (the kernel releases
    the lock, ``kill -9`` included) and is removed.  A file must arrive within
    ``deadline`` seconds in all, and a mirror that sends less than ``min_rate``
    bytes per second over ``rate_window`` seconds is cut off sooner.  Files are
    created with the permissions the umask gives, as any other file.

    Parameters
    ----------
    directory : str
        Target folder (created if needed).
    mirror : str, optional
        Base URL; default ``$VGG_FASHION_MNIST_MIRROR`` or Zalando's official mirror.
    md5s : dict, optional
        Expected md5 per gzip file name; default the official release's.
    deadline : float
        Seconds each file may take, connection included; also the longest wait
        for another process's download of one file.
    min_rate : float
        The slowest a mirror may send, in bytes per second, averaged over
        ``rate_window`` seconds (as curl's ``--speed-limit``).
    rate_window : float
        Seconds over which the rate is measured (as curl's ``--speed-time``).

    Returns
    -------
    dict
        Path of every file, keyed by name without ``.gz``.

    Raises
    ------
    DataError
        If the mirror cannot be reached, is too slow, a file has the wrong
        checksum, or another process's download of a file takes longer than
        ``deadline``.
    """
    directory = _folder('directory', directory)
    mirror = mirror or _mirror()
    md5s = md5s or OFFICIAL_MD5
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise DataError(f'cannot create data directory {directory}: {err.strerror}') from None
    waiting = _once(lambda: print(f'waiting for another process that downloads Fashion-MNIST '
                                  f'into {directory}', file=sys.stderr, flush=True))
    paths = {}
    for name in FILE_NAMES:
        existing = _find_file(directory, name)
        if existing:
            paths[name] = existing
            continue
        target = os.path.join(directory, name + '.gz')
        with _file_lock(os.path.join(directory, f'.{name}.gz.lock'), deadline, waiting):
            # Whoever held the lock before may have downloaded the file meanwhile.
            if not os.path.isfile(target):
                for stale in glob.glob(os.path.join(directory, f'.{name}.gz*.part')):
                    os.remove(stale)  # its writer is dead: the lock was free
                url = mirror.rstrip('/') + '/' + name + '.gz'
                _download_verified(url, target, md5s[name + '.gz'], directory, deadline,
                                   min_rate, rate_window)
        paths[name] = target
    return paths


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """``action`` made to run on the first call only."""
    done: List[bool] = []

    def call() -> None:
        if not done:
            done.append(True)
            action()
    return call


@contextlib.contextmanager
def _file_lock(path: str, wait: float, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created, then removed on release).

    Calls ``on_wait`` when another process holds it, and polls for up to ``wait``
    seconds.  The holder removes the file before it lets go, so a waiter that then
    gets the lock of a removed file tries again on the file that ``path`` names now.

    Raises
    ------
    DataError
        If the lock is not free within ``wait`` seconds.
    """
    end = time.monotonic() + wait
    while True:
        try:
            # Read-only suffices for flock, and works on a lock file another user created.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError as err:
            raise DataError(f'cannot create the lock file {path}: {err.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > end:
                raise DataError(f'another process has been downloading into '
                                f'{os.path.dirname(path)} for over {wait:g} s (it holds {path}); '
                                'wait for it to end, or stop it') from None
            on_wait()
            time.sleep(LOCK_POLL)
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the previous holder removed this one: lock the new one
    try:
        yield
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
        os.close(fd)


def _rate(bytes_per_second: float) -> str:
    if bytes_per_second < 1000:
        return f'{bytes_per_second:.0f} B/s'
    return f'{bytes_per_second / 1000:.1f} kB/s'


def _download_verified(url: str, target: str, md5: str, directory: str, deadline: float,
                       min_rate: float, rate_window: float) -> None:
    # A fixed name (the caller holds the file's lock), created as open() creates files:
    # the umask decides who may read it, not tempfile's owner-only 0600.
    tmp = os.path.join(directory, f'.{os.path.basename(target)}.{os.getpid()}.part')
    started = time.monotonic()
    # No single wait on the socket outlasts the rate window: a silent mirror is cut off too.
    timeout = min(30.0, deadline, rate_window)
    try:
        digest = hashlib.md5()
        with open(tmp, 'xb') as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in _chunks(response, started, deadline, min_rate, rate_window,
                                         timeout):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, 'reason', err)
                raise DataError(_missing_message(directory, f'{url}: {reason}', None)) from None
        if digest.hexdigest() != md5:
            raise DataError(f'{url}: md5 {digest.hexdigest()} does not match the expected {md5}; '
                            'the download is corrupt or the mirror serves other files')
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _chunks(response: Any, started: float, deadline: float, min_rate: float,
            rate_window: float, timeout: float) -> Iterator[bytes]:
    """The body of ``response`` as it arrives.

    read1 returns whatever has arrived, so the limits are checked however slowly
    the bytes come.

    Raises
    ------
    TimeoutError
        When ``deadline`` seconds have passed since ``started``, when fewer than
        ``min_rate`` bytes per second came over the last ``rate_window`` seconds, or
        when nothing came for ``timeout`` seconds.
    """
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = response.read1(1 << 20)
        except socket.timeout:
            raise TimeoutError(f'the mirror sent nothing for {timeout:g} s') from None
        if not chunk:
            return
        yield chunk
        window_bytes += len(chunk)
        now = time.monotonic()
        if now - started > deadline:
            raise TimeoutError(f'the download took longer than {deadline:g} s')
        if now - window_start >= rate_window:
            rate = window_bytes / (now - window_start)
            if rate < min_rate:
                raise TimeoutError(f'the mirror sent {_rate(rate)} over {now - window_start:.1f} '
                                   f's, below the minimum of {_rate(min_rate)}')
            window_start, window_bytes = now, 0


def _check_roles(paths: Dict[str, str]) -> None:
    """DataError if a file is, by its checksum, another of the four official files."""
    known = [(OFFICIAL_MD5, 'md5'), (MXNET_MIRROR_SHA1, 'sha1')]
    for path in paths.values():
        name = os.path.basename(path)
        if not name.endswith('.gz'):  # the checksums are those of the gzip files
            continue
        for digests, algorithm in known:
            others = {digest: other for other, digest in digests.items() if other != name}
            other = others.get(file_digest(path, algorithm)) if others else None
            if other is not None:
                raise DataError(f'{path} is Fashion-MNIST\'s {other} (by its {algorithm}), '
                                f'not {name}: the files are swapped or misnamed; give each '
                                'its own name')


class FashionMNISTIter:
    """Batches of one split, cut from its uint8 array: ``(X, y)`` NDArrays per batch.

    ``X`` is float32 of shape (batch, 1, resize, resize) in [0, 1] and ``y``
    int32, like gluonbook's DataLoader; the last batch may be smaller.  The
    order is reshuffled on every pass when ``shuffle`` is true.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 resize: Optional[int] = None, shuffle: bool = False,
                 ctx: Optional[mx.Context] = None, seed: Optional[int] = None):
        check_positive('batch_size', batch_size, int)
        if resize is not None:
            check_positive('resize', resize, int)
        self.images, self.labels = images, labels
        self.batch_size, self.resize, self.shuffle = batch_size, resize, shuffle
        self.ctx = ctx or mx.cpu()
        self._rng = np.random.RandomState(seed)
        self.data_dir: Optional[str] = None  # the folder the images came from, when known

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Tuple[nd.NDArray, nd.NDArray]]:
        count = len(self.labels)
        order = self._rng.permutation(count) if self.shuffle else None
        for start in range(0, count, self.batch_size):
            index = slice(start, start + self.batch_size) if order is None else \
                order[start:start + self.batch_size]
            yield self.transform(self.images[index]), \
                nd.array(self.labels[index], ctx=self.ctx, dtype='int32')

    def transform(self, images: np.ndarray) -> nd.NDArray:
        """uint8 (N, 28, 28) images to float32 (N, 1, resize, resize) in [0, 1] on ``ctx``."""
        X = nd.array(images[:, None], ctx=self.ctx, dtype='uint8').astype('float32')
        if self.resize and self.resize != X.shape[-1]:
            # Half-pixel centres (align_corners=False) are OpenCV's convention,
            # which gluon's transforms.Resize uses.
            X = nd.contrib.BilinearResize2D(X, height=self.resize, width=self.resize,
                                            align_corners=False)
        return X / 255


def shard(array: np.ndarray, num_parts: int, part_index: int) -> np.ndarray:
    """Part ``part_index`` of ``num_parts`` equal, interleaved parts of ``array``.

    Part k holds items k, k + num_parts, k + 2 num_parts, ...  The last
    ``len(array) % num_parts`` items are left out, so that every part has the same
    length: the workers of a dist_sync job must take the same number of steps.
    Interleaving makes batch t of all parts together (batch size b each) the items
    of batch t of the whole array with batch size ``num_parts * b``.

    Raises
    ------
    ValueError
        If ``part_index`` is not in ``0 .. num_parts - 1``.
    """
    check_positive('num_parts', num_parts, int)
    if isinstance(part_index, bool) or not isinstance(part_index, int) \
            or not 0 <= part_index < num_parts:
        raise ValueError(f'part_index must be in 0..{num_parts - 1}, got {part_index!r}')
    return array[part_index:len(array) - len(array) % num_parts:num_parts]


def load_data_fashion_mnist(batch_size: int, resize: Optional[int] = None,
                            root: Optional[str] = None, *, ctx: Optional[mx.Context] = None,
                            max_samples: Optional[int] = None, seed: Optional[int] = None,
                            download: bool = True, num_parts: int = 1,
                            part_index: int = 0) -> Tuple[FashionMNISTIter, FashionMNISTIter]:
    """Fashion-MNIST as ``(train_iter, test_iter)`` with gluonbook's semantics.

    Parameters
    ----------
    batch_size : int
        Images per batch.
    resize : int, optional
        Height and width after bilinear resizing; None keeps 28x28.
    root : str, optional
        Folder with the four files; then ``$VGG_DATA_DIR``, then
        ``$MXNET_HOME/datasets/fashion-mnist``.  Missing files are downloaded.
    ctx : mxnet.Context, optional
        Where batches are built and resized (default the CPU).
    max_samples : int, optional
        Use only the first ``max_samples`` images of each split (quick runs).
    seed : int, optional
        Seed of the training set's shuffling.
    download : bool
        Whether missing files may be downloaded.
    num_parts, part_index : int
        Train on part ``part_index`` of ``num_parts`` of the training set only
        (see :func:`shard`; after ``max_samples``), as one worker of a distributed
        job does.  The test set stays whole.

    Returns
    -------
    (FashionMNISTIter, FashionMNISTIter)
        Shuffled training batches and unshuffled test batches; their
        ``data_dir`` is the folder the files were read from.
    """
    paths = _locate_files(root, download, None)
    data_dir = os.path.dirname(paths[FILE_NAMES[0]])
    arrays = _read_arrays(paths)
    if max_samples is not None:
        check_positive('max_samples', max_samples, int)
    iters = []
    for split in ('train', 'test'):
        images, labels = (a[:max_samples] for a in arrays[split])
        if split == 'train':
            images, labels = (shard(a, num_parts, part_index) for a in (images, labels))
            if not len(labels):
                raise ValueError(f'{num_parts} workers need at least {num_parts} training '
                                 'images, one each; raise max_samples')
        iters.append(FashionMNISTIter(images, labels, batch_size, resize,
                                      shuffle=split == 'train', ctx=ctx, seed=seed))
        iters[-1].data_dir = data_dir
    return iters[0], iters[1]


def get_fashion_mnist_labels(labels: Sequence[int]) -> List[str]:
    """Class names for numeric labels.

    Parameters
    ----------
    labels : sequence of int
        Class indices 0..9: ints, numpy integers, or whole floats (argmax gives float32),
        in a list, a numpy array or an NDArray.

    Raises
    ------
    ValueError
        If ``labels`` is not a sequence, or one of them is not an integer in 0..9.
    """
    if isinstance(labels, nd.NDArray):
        labels = labels.asnumpy()
    expected = f'class indices, integers in 0..{NUM_CLASSES - 1}'
    try:
        items = list(labels)
    except TypeError:
        raise ValueError(f'labels must be a sequence of {expected}, got {labels!r}') from None
    names = []
    for position, label in enumerate(items):
        index = _class_index(label)
        if index is None:
            # As a Python scalar: numpy 2 shows np.float64(nan) where numpy 1 showed nan.
            shown = label.item() if isinstance(label, np.generic) else label
            raise ValueError(f'labels must be {expected}; labels[{position}] is {shown!r}')
        names.append(TEXT_LABELS[index])
    return names


def _class_index(label: Any) -> Optional[int]:
    # A bool is an int to Python, but never a class index; -1 would index from the end.
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Real):
        return None
    if not isinstance(label, numbers.Integral) and not float(label).is_integer():
        return None
    index = int(label)
    return index if 0 <= index < NUM_CLASSES else None
