import gluonbook as gb
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, init, nd
from mxnet.gluon import nn

from helpers import LINE, small_cnn, synthetic_batches, synthetic_split
from vgg.data import FashionMNISTIter
from vgg.model import vgg
from vgg.training import evaluate_accuracy, split_batch, train


def twin_networks(tmp_path, ctx=mx.cpu()):
    """Two copies of ``small_cnn`` with identical initial parameters."""
    first = small_cnn()
    first.initialize(init.Xavier(), ctx=ctx)
    first(nd.zeros((1, 1, 28, 28), ctx=ctx))
    first.save_parameters(str(tmp_path / 'init.params'))
    second = small_cnn()
    second.load_parameters(str(tmp_path / 'init.params'), ctx=ctx)
    return first, second


def sgd(net, lr=0.1):
    return gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': lr})


def test_same_numbers_as_gluonbook_train(tmp_path, capsys):
    train_batches, test_batches = synthetic_batches(192, 32, 0), synthetic_batches(64, 32, 1)
    net_book, net_ours = twin_networks(tmp_path)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    gb.train(train_batches, test_batches, net_book, loss, sgd(net_book), mx.cpu(), 2)
    book_lines = capsys.readouterr().out.splitlines()
    history = train(train_batches, test_batches, net_ours, loss, sgd(net_ours), mx.cpu(), 2,
                    progress=False)
    our_lines = capsys.readouterr().out.splitlines()
    assert book_lines[0] == our_lines[0] == 'training on cpu(0)'
    assert len(our_lines) == 3 and all(LINE.fullmatch(line) for line in our_lines[1:])
    for book, ours, stats in zip(book_lines[1:], our_lines[1:], history):
        assert LINE.fullmatch(book).groups() == LINE.fullmatch(ours).groups()
        assert '%.4f' % stats['loss'] == LINE.fullmatch(book).group(2)
    for p_book, p_ours in zip(net_book.collect_params().values(),
                              net_ours.collect_params().values()):
        np.testing.assert_allclose(p_book.data().asnumpy(), p_ours.data().asnumpy(),
                                   rtol=1e-5, atol=1e-6)
    assert evaluate_accuracy(test_batches, net_ours) == pytest.approx(
        gb.evaluate_accuracy(test_batches, net_book))


def test_history_fields_and_loss_falls(fashion_dir, capsys):
    images, labels = synthetic_split(256, seed=0)
    train_iter = FashionMNISTIter(images, labels, 32, shuffle=True, seed=0)
    test_iter = FashionMNISTIter(*synthetic_split(64, seed=1), 32)
    net = vgg(((1, 8), (1, 16)), 10)
    net.initialize(init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    mx.random.seed(0)
    live = []
    history = train(train_iter, test_iter, net, gluon.loss.SoftmaxCrossEntropyLoss(),
                    sgd(net, 0.05), mx.cpu(), 6, progress=False, on_point=live.append)
    assert [h['epoch'] for h in history] == list(range(1, 7))
    # The points sent while training are those the history keeps, in order.
    assert live == [p for h in history for p in h['points']]
    assert set(history[0]) == {'epoch', 'loss', 'train_acc', 'test_acc', 'time', 'images_per_sec',
                               'points'}
    # The finer history: one point per batch here (8 batches of 32, fewer than POINTS_PER_EPOCH),
    # at the fraction of the epoch done; the points' means are the epoch's.
    for h in history:
        points = h['points']
        assert [p['epoch'] for p in points] == pytest.approx(
            [h['epoch'] - 1 + (i + 1) / 8 for i in range(8)])
        assert np.mean([p['loss'] for p in points]) == pytest.approx(h['loss'], rel=1e-5)
        assert np.mean([p['train_acc'] for p in points]) == pytest.approx(h['train_acc'])
    assert history[-1]['loss'] < 0.5 * history[0]['loss']
    assert history[-1]['test_acc'] > 0.5
    assert all(h['images_per_sec'] > 0 and h['time'] > 0 for h in history)
    assert len(capsys.readouterr().out.splitlines()) == 7


def test_progress_bar_goes_to_stderr(capsys):
    batches = synthetic_batches(64, 32, 0)
    net = small_cnn()
    net.initialize()
    train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net), mx.cpu(), 1)
    captured = capsys.readouterr()
    assert 'epoch 1' in captured.err and LINE.fullmatch(captured.out.splitlines()[1])


def test_two_contexts_equal_one(tmp_path, capsys):
    batches = synthetic_batches(64, 64, 0)
    net_one, _ = twin_networks(tmp_path)
    net_two = small_cnn()
    net_two.load_parameters(str(tmp_path / 'init.params'), ctx=[mx.cpu(0), mx.cpu(1)])
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    h_one = train(batches, batches, net_one, loss, sgd(net_one), mx.cpu(), 1, progress=False)
    h_two = train(batches, batches, net_two, loss, sgd(net_two), [mx.cpu(0), mx.cpu(1)], 1,
                  progress=False)
    assert capsys.readouterr().out.splitlines()[2] == 'training on [cpu(0), cpu(1)]'
    assert h_one[0]['loss'] == pytest.approx(h_two[0]['loss'], rel=1e-5)
    assert h_one[0]['test_acc'] == h_two[0]['test_acc']
    for p_one, p_two in zip(net_one.collect_params().values(), net_two.collect_params().values()):
        for ctx in (mx.cpu(0), mx.cpu(1)):
            np.testing.assert_allclose(p_one.data().asnumpy(), p_two.data(ctx).asnumpy(),
                                       rtol=1e-5, atol=1e-6)


def test_split_batch_handles_uneven_batches():
    X, y = nd.ones((5, 1, 4, 4)), nd.array([1, 2, 3, 4, 5], dtype='int32')
    Xs, ys = split_batch(X, y, [mx.cpu(0), mx.cpu(1)])
    assert [x.shape[0] for x in Xs] == [3, 2] and ys[1].dtype == np.float32


def test_diverging_loss_stops_with_a_clear_error():
    batches = synthetic_batches(64, 32, 0)
    net = small_cnn()
    net.initialize(init.Xavier())
    with pytest.raises(FloatingPointError, match='epoch 1.*lower the learning rate'):
        train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net, 1e30),
              mx.cpu(), 1, progress=False)


def test_evaluate_accuracy_empty_iterator():
    net = small_cnn()
    net.initialize()
    with pytest.raises(ValueError, match='empty'):
        evaluate_accuracy([], net)


class CountingBatches(list):
    """A list of batches that counts how many batches were drawn from it."""

    drawn = 0

    def __iter__(self):
        for batch in super().__iter__():
            self.drawn += 1
            yield batch


def test_non_finite_loss_stops_at_the_next_batch_naming_the_batch():
    batches = CountingBatches(synthetic_batches(320, 32, 0))
    cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss()
    calls = []

    def loss_turning_nan_in_batch_3(y_hat, y):
        calls.append(None)
        return cross_entropy(y_hat, y) * (float('nan') if len(calls) == 3 else 1)
    net = small_cnn()
    net.initialize(init.Xavier())
    with pytest.raises(FloatingPointError,
                       match=r'loss became nan in epoch 1, batch 3; lower the learning rate '
                             r'\(it is 0\.1\)'):
        train(batches, batches, net, loss_turning_nan_in_batch_3, sgd(net), mx.cpu(), 1,
              progress=False)
    assert batches.drawn == 4  # checked one batch behind: no device sync per batch


def test_start_epoch_numbers_on_and_on_epoch_end_sees_every_epoch(capsys):
    batches = synthetic_batches(64, 32, 0)
    net = small_cnn()
    net.initialize(init.Xavier())
    seen = []
    history = train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net),
                    mx.cpu(), 2, progress=False, start_epoch=3, on_epoch_end=seen.append)
    assert [h['epoch'] for h in history] == [4, 5] and seen == history
    assert [LINE.fullmatch(line).group(1) for line in capsys.readouterr().out.splitlines()[1:]] == \
        ['4', '5']


def chapter_style_net():
    """A network built as the chapter builds it: nn.Sequential blocks (not hybridizable)."""
    net = nn.Sequential()
    block = nn.Sequential()
    block.add(nn.Conv2D(6, kernel_size=3, padding=1, activation='relu'), nn.MaxPool2D(2, 2))
    net.add(block, nn.Dense(32, activation='relu'), nn.Dense(10))
    return net


def test_train_hybridizes_a_hybrid_block_unless_told_not_to(capsys):
    batches = synthetic_batches(64, 32, seed=0)
    for hybridize in (True, False):
        net = small_cnn()
        net.initialize(init.Xavier())
        train(batches, None, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net), mx.cpu(), 1,
              progress=False, hybridize=hybridize)
        assert net._active is hybridize


def test_a_chapter_style_sequential_trains_as_a_static_graph_with_the_same_numbers(capsys):
    batches = synthetic_batches(96, 32, seed=0)
    results = {}
    for hybridize in (True, False):
        mx.random.seed(0)
        net = chapter_style_net()
        net.initialize(init.Xavier())
        history = train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net),
                        mx.cpu(), 2, progress=False, hybridize=hybridize)
        results[hybridize] = (history, [p.data().asnumpy()
                                        for p in net.collect_params().values()])
        # The user's own network is what was trained, and it still runs as it was built.
        assert net(nd.array(synthetic_split(4, 3)[0][:, None] / 255)).shape == (4, 10)
    (hist_h, params_h), (hist_i, params_i) = results[True], results[False]
    for a, b in zip(hist_h, hist_i):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-4)
        assert a['test_acc'] == pytest.approx(b['test_acc'], abs=1 / 96 + 1e-9)
    assert len(params_h) == len(params_i) == 6
    for trained_h, trained_i in zip(params_h, params_i):
        np.testing.assert_allclose(trained_h, trained_i, rtol=1e-3, atol=1e-5)
    assert type(net) is nn.Sequential and not hasattr(net, '_cached_graph')


def test_a_batch_norm_network_trains_on_two_contexts_each_with_its_own_statistics(capsys):
    ctxs = [mx.cpu(0), mx.cpu(1)]
    mx.random.seed(0)
    net = vgg(((1, 8), (1, 16)), 10, batch_norm=True)
    net.initialize(init.Xavier(), ctx=ctxs)
    batches = synthetic_batches(128, 32, seed=0)
    history = train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net), ctxs,
                    3, progress=False)
    assert history[-1]['loss'] < history[0]['loss'] and history[-1]['test_acc'] > 0.3
    running = net[0][1].running_mean
    first, second = (running.data(c).asnumpy() for c in ctxs)
    assert not np.allclose(first, second)  # each device averaged its own half of every batch


def test_a_last_batch_smaller_than_the_devices_trains(capsys):
    # 65 images in batches of 32: the last batch holds 1 image for 2 contexts.
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net = small_cnn()
    net.initialize(init.Xavier(), ctx=ctxs)
    batches = synthetic_batches(65, 32, seed=0)
    history = train(batches, batches, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net), ctxs,
                    1, progress=False)
    assert history[0]['points'][-1]['epoch'] == 1.0 and history[0]['test_acc'] >= 0
    Xs, ys = split_batch(batches[-1][0], batches[-1][1], ctxs)
    assert [x.shape[0] for x in Xs] == [1] and Xs[0].context == mx.cpu(0)


def test_points_are_sent_while_training_and_kept_as_the_epochs_points(capsys):
    # 60 batches: a point every 3 batches, 20 an epoch.  Without len() (a generator), the
    # first epoch's points are made at its end and none is sent; from then on, as they come.
    batches = synthetic_batches(60, 1, seed=0)
    for iterable, epochs in ((batches, 1), (_LenlessBatches(batches), 2)):
        net = small_cnn()
        net.initialize(init.Xavier())
        live = []
        history = train(iterable, None, net, gluon.loss.SoftmaxCrossEntropyLoss(), sgd(net),
                        mx.cpu(), epochs, progress=False, on_point=live.append)
        assert [len(h['points']) for h in history] == [20] * epochs
        assert [p['epoch'] for p in history[-1]['points']] == pytest.approx(
            [epochs - 1 + k / 20 for k in range(1, 21)])
        assert live == history[-1]['points']


class _LenlessBatches:
    """Iterable batches without ``len``, as a generator-backed loader is."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)
