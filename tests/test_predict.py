"""Image files read like the loader's images, predictions; evaluate and predict on real data."""
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from mxnet import nd
from PIL import Image

from helpers import QUICK, REPO, run_cli, synthetic_split
from vgg.data import TEXT_LABELS, FashionMNISTIter, load_data_fashion_mnist
from vgg.experiment import load_net
from vgg.model import build_net
from vgg.predict import (
    confusion_matrix,
    per_class_accuracy,
    predict_probabilities,
    read_image,
    top_classes,
)
from vgg.runs import Run
from vgg.training import evaluate_accuracy

IMAGES, LABELS = synthetic_split(8, seed=0)


def test_a_28x28_grey_png_reads_back_exactly(tmp_path):
    Image.fromarray(IMAGES[0]).save(tmp_path / 'a.png')
    np.testing.assert_array_equal(read_image(str(tmp_path / 'a.png')), IMAGES[0])


@pytest.mark.parametrize('name', ['big.png', 'big.jpg'])
def test_a_larger_colour_image_reads_close_to_the_original(tmp_path, name):
    colour = np.stack([IMAGES[1]] * 3, axis=-1)
    Image.fromarray(colour).resize((84, 84), Image.Resampling.BICUBIC).save(tmp_path / name)
    image = read_image(str(tmp_path / name))
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - IMAGES[1]).mean() < 16


def test_invert_turns_a_dark_object_on_white_into_fashion_mnist_colours(tmp_path):
    Image.fromarray(255 - IMAGES[2]).save(tmp_path / 'photo.png')
    np.testing.assert_array_equal(read_image(str(tmp_path / 'photo.png'), invert=True), IMAGES[2])


def test_a_wide_image_is_padded_to_a_centred_square(tmp_path):
    Image.new('L', (56, 28), 255).save(tmp_path / 'wide.png')
    image = read_image(str(tmp_path / 'wide.png'))
    assert (image[:6] == 0).all() and (image[-6:] == 0).all() and (image[8:20] == 255).all()


@pytest.mark.parametrize('invert', [False, True])
def test_transparent_pixels_are_background(tmp_path, invert):
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[10:18, 10:18] = (255, 255, 255, 255) if not invert else (0, 0, 0, 255)
    Image.fromarray(rgba).save(tmp_path / 'cut-out.png')
    image = read_image(str(tmp_path / 'cut-out.png'), invert=invert)
    assert image[0, 0] == 0 and image[14, 14] == 255


def test_a_truncated_image_is_a_value_error(tmp_path):
    Image.fromarray(IMAGES[3]).save(tmp_path / 'a.png')
    data = (tmp_path / 'a.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='cut.png: not an image that can be read'):
        read_image(str(tmp_path / 'cut.png'))


def test_predictions_go_through_the_loaders_transform():
    net = build_net('vgg11', 16, 32)
    batches = FashionMNISTIter(IMAGES, LABELS, 3, resize=32)
    expected = np.concatenate([nd.softmax(net(X)).asnumpy() for X, _ in batches])
    probabilities = predict_probabilities(net, IMAGES, 32, batch_size=5)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert confusion_matrix(net, batches).trace() / len(LABELS) == evaluate_accuracy(batches, net)


def test_top_classes():
    probabilities = np.array([0.1, 0.6, 0.3] + [0] * 7)
    assert top_classes(probabilities, 2) == [('trouser', 0.6), ('pullover', 0.3)]


def test_per_class_accuracy_is_each_rows_share_on_the_diagonal():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    np.testing.assert_array_equal(per_class_accuracy(matrix), [0.75, 0.0, 0.5])


@pytest.fixture(scope='module')
def real_run(real_data_dir, tmp_path_factory):
    """A short run on the real Fashion-MNIST (256 images of each split, one epoch)."""
    out = tmp_path_factory.mktemp('real') / 'run'
    result = run_cli('train', *QUICK, '--epochs', '1', '--max-samples', '256', '--lr', '0.1',
                     '--seed', '0', '--no-progress', '--data-dir', real_data_dir, '--out', out)
    assert result.returncode == 0, result.stderr
    return Run(str(out))


@pytest.mark.slow
def test_evaluate_on_real_data(real_run):
    result = run_cli('evaluate', real_run.path, '--ctx', 'cpu')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    test_acc = json.loads(open(real_run.file('metrics.jsonl')).readline())['test_acc']
    assert lines[0] == (f'test accuracy {test_acc:.3f} '
                        f'(256 images, after epoch 1 of {real_run.path})')
    rows = [re.fullmatch(r'(.+?) +(\d\.\d{3}) +(\d+)', line) for line in lines[2:12]]
    assert [row.group(1) for row in rows] == TEXT_LABELS
    assert sum(int(row.group(3)) for row in rows) == 256
    assert lines[-1] == f'confusion matrix: {real_run.file("confusion.png")}'
    with open(real_run.file('confusion.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_predict_on_real_images(real_run, real_data_dir, tmp_path):
    _, test_iter = load_data_fashion_mnist(8, root=real_data_dir, max_samples=8, download=False)
    images = test_iter.images[:2]
    Image.fromarray(images[0]).save(tmp_path / 'first.png')
    colour = Image.fromarray(np.stack([images[1]] * 3, axis=-1))
    colour.resize((100, 100)).save(tmp_path / 'second.jpg')
    result = run_cli('predict', real_run.path, tmp_path / 'first.png', tmp_path / 'second.jpg',
                     '--top', '2', '--ctx', 'cpu')
    assert result.returncode == 0, result.stderr
    pattern = r'(.+): ({0}) (\d\.\d{{3}}), ({0}) (\d\.\d{{3}})'.format('|'.join(TEXT_LABELS))
    lines = [re.fullmatch(pattern, line) for line in result.stdout.splitlines()]
    assert [line.group(1) for line in lines] == [str(tmp_path / 'first.png'),
                                                 str(tmp_path / 'second.jpg')]
    expected = predict_probabilities(load_net(real_run.path), images[:1], 32)[0]
    name, probability = top_classes(expected, 1)[0]
    assert (lines[0].group(2), lines[0].group(3)) == (name, f'{probability:.3f}')
    assert all(float(line.group(3)) >= float(line.group(5)) for line in lines)
    assert os.path.exists(real_run.file('history.png'))


def _gradient(dtype, top):
    return (np.linspace(0, 1, 28 * 28).reshape(28, 28) * top).astype(dtype)


@pytest.mark.parametrize('name, image', [
    ('grey16.png', lambda: Image.fromarray(_gradient(np.uint16, 65535))),
    ('grey16.tiff', lambda: Image.fromarray(_gradient(np.uint16, 65535))),
    ('int32.tiff', lambda: Image.fromarray(_gradient(np.int32, 65535), mode='I')),
    ('unit-float.tiff', lambda: Image.fromarray(_gradient(np.float32, 1.0), mode='F')),
    ('byte-float.tiff', lambda: Image.fromarray(_gradient(np.float32, 255.0), mode='F')),
    ('grey8.png', lambda: Image.fromarray(_gradient(np.uint8, 255))),
])
def test_every_grey_depth_is_scaled_to_8_bits(tmp_path, name, image):
    path = tmp_path / name
    image().save(path)
    pixels = read_image(str(path))
    expected = np.round(np.linspace(0, 255, 28 * 28).reshape(28, 28))
    assert np.abs(pixels.astype(int) - expected).max() <= 1


@pytest.mark.parametrize('damage', [
    lambda data: data[:60] + b'\0' * 50,                      # broken chunk: Pillow's SyntaxError
    lambda data: data[:8] + b'\0\0\0\rIHDR' + data[16:40],   # a header that lies
    lambda data: b'GIF89a' + data[6:30],                      # another format's magic, no body
])
def test_a_broken_image_file_is_one_value_error(tmp_path, damage):
    good = tmp_path / 'good.png'
    Image.fromarray(_gradient(np.uint16, 65535)).save(good)
    broken = tmp_path / 'broken.png'
    broken.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ValueError, match='not an image that can be read'):
        read_image(str(broken))


def test_a_float_image_with_nan_is_refused(tmp_path):
    values = _gradient(np.float32, 1.0)
    values[0, 0] = np.nan
    Image.fromarray(values, mode='F').save(tmp_path / 'nan.tiff')
    with pytest.raises(ValueError, match='not finite'):
        read_image(str(tmp_path / 'nan.tiff'))


# --- photos as cameras and phones save them; files that are no photos ----------------

ORIENTATION = 0x0112  # the EXIF tag


def _letter_t():
    """An upright 'T' (56x56): any rotation of it is another image."""
    pixels = np.zeros((56, 56), dtype=np.uint8)
    pixels[4:12, 8:48] = 200
    pixels[4:52, 20:36] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize('tag, stored', [(6, Image.Transpose.ROTATE_90),
                                         (8, Image.Transpose.ROTATE_270)])
def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, tag, stored):
    # A camera held sideways stores the pixels sideways and says how to turn them.
    upright = _letter_t()
    upright.save(tmp_path / 'upright.jpg', quality=100)
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    upright.transpose(stored).save(tmp_path / 'phone.jpg', quality=100, exif=exif)
    upright.transpose(stored).save(tmp_path / 'sideways.jpg', quality=100)
    expected = read_image(str(tmp_path / 'upright.jpg'))
    np.testing.assert_array_equal(read_image(str(tmp_path / 'phone.jpg')), expected)
    assert np.abs(read_image(str(tmp_path / 'sideways.jpg')).astype(int) - expected).max() > 100


# Reads IMAGE in a fresh process; prints its peak RSS (KB) before and after.
PEAK_RSS = '''
import resource, sys
from vgg.predict import read_image
read_image(sys.argv[1])  # a small image first: what reading costs anyway
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = read_image(sys.argv[2])
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, image.shape, image.max())
'''


@pytest.mark.slow
@pytest.mark.parametrize('size', [(1, 60000), (60000, 1), (7, 40000)])
def test_a_very_thin_image_is_read_with_bounded_memory(tmp_path, size):
    Image.fromarray(IMAGES[0]).save(tmp_path / 'small.png')
    Image.new('L', size, 255).save(tmp_path / 'thin.png')
    assert os.path.getsize(tmp_path / 'thin.png') < 1000  # a few hundred bytes
    result = subprocess.run([sys.executable, '-c', PEAK_RSS, str(tmp_path / 'small.png'),
                             str(tmp_path / 'thin.png')], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after, shape = result.stdout.split(maxsplit=2)
    # Padding it to a square first took 3.6 GB (60000 x 60000), or a MemoryError.
    assert int(after) - int(before) < 50_000, result.stdout
    assert shape.startswith('(28, 28)')


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / 'camera.jpg'
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_image(str(fifo))
        except ValueError as err:
            outcome.append(str(err))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # it waits for a writer: be one, so that the thread ends
        with open(fifo, 'wb'):
            pass
        reader.join(10)
        pytest.fail('read_image waited on a FIFO')
    assert outcome == [f'{fifo}: not an image that can be read (a FIFO, not a regular file)']
