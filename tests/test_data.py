import fcntl
import gzip
import hashlib
import http.server
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import threading
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon.data.vision import transforms

from helpers import REPO, identify, idx_bytes, synthetic_split, wait_for, write_dataset
from vgg.data import (
    FILE_NAMES,
    DataError,
    candidate_dirs,
    download_fashion_mnist,
    find_files,
    get_fashion_mnist_labels,
    load_arrays,
    load_data_fashion_mnist,
    read_idx,
)


def test_loads_synthetic_gzip_files(fashion_dir):
    train_iter, test_iter = load_data_fashion_mnist(32, root=fashion_dir)
    assert len(train_iter) == 3 and len(test_iter) == 2
    X, y = next(iter(test_iter))
    assert X.shape == (32, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int32
    assert 0 <= X.min().asscalar() and X.max().asscalar() <= 1
    images, labels = synthetic_split(40, seed=1)
    np.testing.assert_allclose(X.asnumpy()[:, 0], images[:32] / 255, atol=1e-6)
    np.testing.assert_array_equal(y.asnumpy(), labels[:32])


def test_loads_raw_idx_files(isolated_env):
    write_dataset(isolated_env / 'raw', compress=False)
    arrays = load_arrays(str(isolated_env / 'raw'), download=False)
    assert arrays['train'][0].shape == (96, 28, 28) and arrays['test'][1].shape == (40,)


def test_resize_matches_gluon_per_image_resize(fashion_dir):
    _, test_iter = load_data_fashion_mnist(8, resize=96, root=fashion_dir)
    X, _ = next(iter(test_iter))
    assert X.shape == (8, 1, 96, 96)
    images, _ = synthetic_split(40, seed=1)
    chapter = transforms.Compose([transforms.Resize(96), transforms.ToTensor()])
    expected = np.stack([chapter(nd.array(img[:, :, None], dtype='uint8')).asnumpy()
                         for img in images[:8]])
    # OpenCV rounds its uint8 result; the batch resize keeps float32, so they
    # differ by less than one grey level.
    assert np.abs(X.asnumpy() - expected).max() < 1 / 255


def test_train_is_shuffled_each_pass_and_test_is_not(fashion_dir):
    train_iter, test_iter = load_data_fashion_mnist(96, root=fashion_dir, seed=3)
    first, second = [next(iter(train_iter))[1].asnumpy() for _ in range(2)]
    labels = synthetic_split(96, seed=0)[1]
    assert sorted(first) == sorted(labels) and not np.array_equal(first, second)
    t1, t2 = [np.concatenate([y.asnumpy() for _, y in test_iter]) for _ in range(2)]
    np.testing.assert_array_equal(t1, t2)


def test_last_partial_batch_is_kept(fashion_dir):
    train_iter, _ = load_data_fashion_mnist(40, root=fashion_dir)
    sizes = [X.shape[0] for X, _ in train_iter]
    assert sizes == [40, 40, 16] and train_iter.num_examples == 96


def test_max_samples(fashion_dir):
    train_iter, test_iter = load_data_fashion_mnist(10, root=fashion_dir, max_samples=25)
    assert train_iter.num_examples == 25 and test_iter.num_examples == 25
    with pytest.raises(ValueError, match='max_samples'):
        load_data_fashion_mnist(10, root=fashion_dir, max_samples=0)


@pytest.mark.parametrize('kwargs,match', [({'batch_size': 0}, 'batch_size'),
                                          ({'batch_size': 2.5}, 'batch_size'),
                                          ({'batch_size': 4, 'resize': 0}, 'resize')])
def test_bad_batching_arguments(fashion_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_data_fashion_mnist(root=fashion_dir, **kwargs)


def test_search_order(isolated_env, monkeypatch):
    env_dir, root_dir = isolated_env / 'env', isolated_env / 'root'
    write_dataset(env_dir)
    monkeypatch.setenv('VGG_DATA_DIR', str(env_dir))
    assert find_files(str(root_dir))['train-images-idx3-ubyte'].startswith(str(env_dir))
    write_dataset(root_dir)
    assert find_files(str(root_dir))['train-images-idx3-ubyte'].startswith(str(root_dir))
    monkeypatch.delenv('VGG_DATA_DIR')
    home = isolated_env / 'mxnet-home' / 'datasets' / 'fashion-mnist'
    write_dataset(home)
    assert find_files(None)['t10k-labels-idx1-ubyte'].startswith(str(home))
    assert candidate_dirs(None) == [str(home)]


def _corrupt(path, how):
    data = gzip.open(path).read()
    if how == 'truncated-gzip':
        raw = open(path, 'rb').read()
        open(path, 'wb').write(raw[:len(raw) // 2])
        return
    if how == 'magic':
        data = b'\x00\x00\x08\x04' + data[4:]
    elif how == 'short':
        data = data[:-100]
    with gzip.open(path, 'wb') as f:
        f.write(data)


@pytest.mark.parametrize('name,how,match', [
    ('train-images-idx3-ubyte.gz', 'truncated-gzip', 'not a complete gzip file'),
    ('train-images-idx3-ubyte.gz', 'magic', 'wrong magic number 2052'),
    ('t10k-images-idx3-ubyte.gz', 'short', 'truncated or corrupt'),
])
def test_bad_files_name_the_file_and_the_problem(fashion_dir, name, how, match):
    path = os.path.join(fashion_dir, name)
    _corrupt(path, how)
    with pytest.raises(DataError, match=match) as info:
        load_data_fashion_mnist(8, root=fashion_dir)
    assert path in str(info.value)
    assert isinstance(info.value, ValueError)


def _rewrite(directory, name, array):
    with gzip.open(os.path.join(directory, name + '.gz'), 'wb') as f:
        f.write(idx_bytes(array))


def test_count_mismatch(fashion_dir):
    _rewrite(fashion_dir, 'train-labels-idx1-ubyte', np.zeros(95, np.uint8))
    with pytest.raises(DataError, match='96 images but .*95 labels'):
        load_arrays(fashion_dir, download=False)


def test_label_out_of_range(fashion_dir):
    _rewrite(fashion_dir, 't10k-labels-idx1-ubyte', np.full(40, 10, np.uint8))
    with pytest.raises(DataError, match=r'label 10 is outside 0\.\.9'):
        load_arrays(fashion_dir, download=False)


def test_wrong_image_size(tmp_path):
    path = tmp_path / 'images'
    path.write_bytes(b'\x00\x00\x08\x03' + (1).to_bytes(4, 'big') + (32).to_bytes(4, 'big') * 2
                     + bytes(1024))
    with pytest.raises(DataError, match='32x32'):
        read_idx(str(path))


def test_swapped_files(fashion_dir):
    a = os.path.join(fashion_dir, 'train-images-idx3-ubyte.gz')
    b = os.path.join(fashion_dir, 'train-labels-idx1-ubyte.gz')
    tmp = a + '.tmp'
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    with pytest.raises(DataError, match='holds labels where images were expected'):
        load_arrays(fashion_dir, download=False)


def test_missing_files_offline_says_what_to_put_where(isolated_env):
    target = isolated_env / 'nowhere'
    with pytest.raises(DataError) as info:
        load_data_fashion_mnist(8, root=str(target), download=False)
    message = str(info.value)
    assert str(target) in message and 'train-images-idx3-ubyte.gz' in message
    assert 't10k-labels-idx1-ubyte.gz' in message and 'VGG_DATA_DIR' in message


class _Server:
    """Serve a folder over HTTP on 127.0.0.1 in a thread."""

    def __init__(self, directory):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(directory), **k)
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _md5s(directory):
    return {name + '.gz': hashlib.md5(open(os.path.join(directory, name + '.gz'), 'rb').read())
            .hexdigest() for name in FILE_NAMES}


def test_download_from_a_local_mirror(isolated_env):
    mirror = isolated_env / 'mirror'
    write_dataset(mirror)
    target = isolated_env / 'downloaded'
    with _Server(mirror) as server:
        paths = download_fashion_mnist(str(target), mirror=server.url, md5s=_md5s(mirror))
    assert sorted(os.listdir(target)) == sorted(n + '.gz' for n in FILE_NAMES)
    assert all(os.path.dirname(p) == str(target) for p in paths.values())
    assert read_idx(paths['train-images-idx3-ubyte']).shape == (96, 28, 28)


def test_loader_downloads_through_the_mirror_variable(isolated_env, monkeypatch):
    mirror = isolated_env / 'mirror'
    write_dataset(mirror)
    with _Server(mirror) as server:
        monkeypatch.setenv('VGG_FASHION_MNIST_MIRROR', server.url)
        monkeypatch.setattr('vgg.data.OFFICIAL_MD5', _md5s(mirror))
        train_iter, _ = load_data_fashion_mnist(16, root=str(isolated_env / 'fresh'))
    assert train_iter.num_examples == 96


def test_download_with_wrong_checksum_leaves_nothing(isolated_env):
    mirror = isolated_env / 'mirror'
    write_dataset(mirror)
    md5s = _md5s(mirror)
    md5s['t10k-images-idx3-ubyte.gz'] = '0' * 32
    target = isolated_env / 'downloaded'
    with _Server(mirror) as server, pytest.raises(DataError, match='md5 .* does not match'):
        download_fashion_mnist(str(target), mirror=server.url, md5s=md5s)
    assert 't10k-images-idx3-ubyte.gz' not in os.listdir(target)
    assert not [n for n in os.listdir(target) if n.endswith('.part')]


def test_unreachable_mirror_is_one_clear_error(isolated_env):
    mirror = isolated_env / 'empty-mirror'
    mirror.mkdir()
    target = isolated_env / 'downloaded'
    with _Server(mirror) as server, pytest.raises(DataError) as info:
        download_fashion_mnist(str(target), mirror=server.url)
    assert 'download' in str(info.value) and 'train-images-idx3-ubyte.gz' in str(info.value)
    assert os.listdir(target) == []


def test_identify_unknown_file(fashion_dir):
    assert identify(os.path.join(fashion_dir, 'train-images-idx3-ubyte.gz')) == 'unknown'


def test_ctx_placement(fashion_dir):
    _, test_iter = load_data_fashion_mnist(8, root=fashion_dir, ctx=mx.cpu(1))
    X, y = next(iter(test_iter))
    assert X.context == mx.cpu(1) and y.context == mx.cpu(1)


def test_labels_to_names():
    assert get_fashion_mnist_labels([0, 9, 5]) == ['t-shirt', 'ankle boot', 'sandal']


def test_real_files(real_data_dir, tmp_path):
    for name in FILE_NAMES:
        assert identify(os.path.join(real_data_dir, name + '.gz')) == 'official'
    train_iter, test_iter = load_data_fashion_mnist(256, resize=64, root=real_data_dir)
    assert train_iter.num_examples == 60000 and test_iter.num_examples == 10000
    X, y = next(iter(test_iter))
    assert X.shape == (256, 1, 64, 64)
    # The test set is balanced: 1000 images of each class.
    counts = np.bincount(test_iter.labels, minlength=10)
    assert counts.tolist() == [1000] * 10
    # Uncompressed copies of the same files load the same.
    raw = tmp_path / 'raw'
    raw.mkdir()
    for name in FILE_NAMES:
        with gzip.open(os.path.join(real_data_dir, name + '.gz')) as src, \
                open(raw / name, 'wb') as dst:
            shutil.copyfileobj(src, dst)
    arrays = load_arrays(str(raw), download=False)
    np.testing.assert_array_equal(arrays['test'][0], test_iter.images)


def test_official_files_in_each_others_roles_are_refused(real_data_dir, tmp_path):
    # The real train and t10k image files swapped under each other's names.
    swapped = {'train-images-idx3-ubyte': 't10k-images-idx3-ubyte',
               't10k-images-idx3-ubyte': 'train-images-idx3-ubyte'}
    for name in FILE_NAMES:
        shutil.copy(os.path.join(real_data_dir, name + '.gz'),
                    tmp_path / (swapped.get(name, name) + '.gz'))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is Fashion-MNIST's "
                       r't10k-images-idx3-ubyte.gz \(by its md5\)'):
        load_arrays(str(tmp_path), download=False)


class _TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Sends a long file one byte every 0.2 s: never silent long enough for a read timeout."""

    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', '100000')
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b'\0')
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client gave up, as it should
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_mirror_is_cut_off_by_the_total_deadline(isolated_env):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _TrickleHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = isolated_env / 'downloaded'
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match='took longer than 1 s'):
            download_fashion_mnist(
                str(target), mirror=f'http://127.0.0.1:{server.server_address[1]}/', deadline=1.0)
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - start < 10
    assert os.listdir(target) == []


def test_part_files_of_a_killed_download_are_removed_by_the_next(isolated_env):
    mirror = isolated_env / 'mirror'
    write_dataset(mirror)
    target = isolated_env / 'downloaded'
    target.mkdir()
    (target / '.train-images-idx3-ubyte.gzk2j4x.part').write_bytes(b'half a file')
    with _Server(mirror) as server:
        download_fashion_mnist(str(target), mirror=server.url, md5s=_md5s(mirror))
    assert sorted(os.listdir(target)) == sorted(n + '.gz' for n in FILE_NAMES)


class _SilentHandler(http.server.BaseHTTPRequestHandler):
    """Sends the headers of a long file, then nothing."""

    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', '100000')
        self.end_headers()
        time.sleep(10)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize('handler, match', [
    (_TrickleHandler, r'the mirror sent [0-9] B/s over 1\.\d s, below the minimum of 100 B/s'),
    (_SilentHandler, 'the mirror sent nothing for 1 s'),
])
def test_a_mirror_below_the_minimum_rate_is_cut_off_long_before_the_deadline(
        isolated_env, handler, match):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mirror = f'http://127.0.0.1:{server.server_address[1]}/'
    target = isolated_env / 'downloaded'
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match=match) as info:
            download_fashion_mnist(str(target), mirror=mirror, deadline=60, min_rate=100,
                                   rate_window=1)
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert '\n' not in message and f'{mirror}train-images-idx3-ubyte.gz' in message
    assert os.listdir(target) == []  # neither the .part file nor the lock is left


class _StallingMirror:
    """Serves a folder on 127.0.0.1, counting requests; the first response stops halfway
    until ``release`` is set, so that a download is certainly under way meanwhile."""

    def __init__(self, directory):
        self.requests, self.stalled, self.release = [], threading.Event(), threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path.lstrip('/'))
                path = os.path.join(directory, self.path.lstrip('/'))
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                data = open(path, 'rb').read()
                self.send_response(200)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                try:
                    if len(mirror.requests) == 1:
                        self.wfile.write(data[:len(data) // 2])
                        self.wfile.flush()
                        mirror.stalled.set()
                        mirror.release.wait(60)
                        data = data[len(data) // 2:]
                    self.wfile.write(data)
                except OSError:  # the client was killed
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# One downloading process, with a umask that differs from tempfile's 0600 and the usual 022.
_DOWNLOADER = '''
import json, os, sys
os.umask(0o027)
from vgg.data import download_fashion_mnist
download_fashion_mnist(sys.argv[1], mirror=sys.argv[2], md5s=json.loads(sys.argv[3]))
'''


def _start_downloader(tmp_path, tag, target, mirror, md5s):
    """A real process downloading into ``target``; returns (Popen, stderr path)."""
    err = tmp_path / f'{tag}.stderr'
    with open(err, 'w') as stderr:
        process = subprocess.Popen([sys.executable, '-c', _DOWNLOADER, str(target), mirror,
                                    json.dumps(md5s)], cwd=REPO, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    return process, err


@pytest.mark.slow
def test_two_processes_downloading_into_one_folder_both_end_with_verified_files(isolated_env):
    mirror_dir, target = isolated_env / 'mirror', isolated_env / 'shared-data'
    write_dataset(mirror_dir)
    md5s = _md5s(mirror_dir)
    with _StallingMirror(mirror_dir) as mirror:
        first, first_err = _start_downloader(isolated_env, 'first', target, mirror.url, md5s)
        second = None
        try:
            assert mirror.stalled.wait(60), first_err.read_text()
            # The first is halfway through a file, holding its lock: the second must wait.
            second, second_err = _start_downloader(isolated_env, 'second', target, mirror.url,
                                                   md5s)
            wait_for(lambda: 'waiting for another process' in second_err.read_text()
                     or second.poll() is not None, 60, 'the second process to wait')
            assert second.poll() is None, second_err.read_text()
            mirror.release.set()
            assert first.wait(60) == 0, first_err.read_text()
            assert second.wait(60) == 0, second_err.read_text()
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
    lines = second_err.read_text().splitlines()
    assert [line for line in lines if 'waiting' in line] == [
        f'waiting for another process that downloads Fashion-MNIST into {target}']
    assert sorted(os.listdir(target)) == sorted(n + '.gz' for n in FILE_NAMES)  # no .part, .lock
    assert _md5s(target) == md5s
    assert sorted(mirror.requests) == sorted(n + '.gz' for n in FILE_NAMES)  # each file once
    for name in os.listdir(target):
        assert stat.S_IMODE(os.stat(target / name).st_mode) == 0o640  # the umask's, not 0600


@pytest.mark.slow
def test_a_download_killed_with_9_leaves_a_part_file_that_the_next_replaces(isolated_env):
    mirror_dir, target = isolated_env / 'mirror', isolated_env / 'shared-data'
    write_dataset(mirror_dir)
    md5s = _md5s(mirror_dir)
    with _StallingMirror(mirror_dir) as mirror:
        killed, killed_err = _start_downloader(isolated_env, 'killed', target, mirror.url, md5s)
        try:
            assert mirror.stalled.wait(60), killed_err.read_text()
        finally:
            killed.kill()
            killed.wait()
        assert [n for n in os.listdir(target) if n.endswith('.part')]
        # The kernel released the dead process's lock: the next one does not wait.
        start = time.monotonic()
        paths = download_fashion_mnist(str(target), mirror=mirror.url, md5s=md5s)
    assert time.monotonic() - start < 30
    assert sorted(os.listdir(target)) == sorted(n + '.gz' for n in FILE_NAMES)
    assert read_idx(paths['train-images-idx3-ubyte']).shape == (96, 28, 28)


def test_a_download_held_by_another_for_too_long_is_one_clear_error(isolated_env, capsys):
    target = isolated_env / 'shared-data'
    target.mkdir()
    # flock locks belong to an open file: this one conflicts with the download's own.
    with open(target / '.train-images-idx3-ubyte.gz.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match=r'another process has been downloading into '
                           rf'{re.escape(str(target))} for over 1 s'):
            download_fashion_mnist(str(target), mirror='http://127.0.0.1:9/', deadline=1)
    assert capsys.readouterr().err == (f'waiting for another process that downloads '
                                       f'Fashion-MNIST into {target}\n')


def test_labels_to_names_accept_numpy_and_whole_floats():
    assert get_fashion_mnist_labels(np.array([9, 0], np.int32)) == ['ankle boot', 't-shirt']
    assert get_fashion_mnist_labels(nd.array([3, 1])) == ['dress', 'trouser']  # argmax: float32


@pytest.mark.parametrize('labels, match', [
    ([-1], r'labels\[0\] is -1'),
    ([0, 10], r'labels\[1\] is 10'),
    ([2.5], r'labels\[0\] is 2\.5'),
    ([True], r'labels\[0\] is True'),
    (['3'], r"labels\[0\] is '3'"),
    (np.array([float('nan')]), r'labels\[0\] is nan'),
    (3, 'labels must be a sequence of class indices, integers in 0..9, got 3'),
])
def test_labels_out_of_range_or_not_integers_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        get_fashion_mnist_labels(labels)


@pytest.mark.parametrize('call', [
    lambda: load_data_fashion_mnist(8, root=5),
    lambda: load_data_fashion_mnist(8, root=b'/tmp'),
    lambda: load_arrays(root=['/tmp']),
    lambda: find_files(5),
])
def test_a_root_that_is_not_a_path_is_one_value_error(isolated_env, call):
    with pytest.raises(ValueError, match=r'^root must be a folder path \(a str or os\.PathLike\)'):
        call()


def test_a_download_directory_that_is_not_a_path_is_one_value_error():
    with pytest.raises(ValueError, match=r'^directory must be a folder path .*got 5$'):
        download_fashion_mnist(5)


def test_a_pathlib_root_works(fashion_dir):
    assert load_arrays(pathlib.Path(fashion_dir), download=False)['test'][1].shape == (40,)
