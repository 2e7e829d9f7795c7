"""The figures: learning curves, prediction grids and confusion matrices, read back from
matplotlib."""
import matplotlib

matplotlib.use('Agg')

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from mxnet import gluon, nd

from vgg.data import TEXT_LABELS
from vgg.plots import LiveCurves, plot_confusion, plot_histories, plot_history, show_predictions


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')


HISTORY = [{'epoch': 1, 'loss': 0.9, 'train_acc': 0.66, 'test_acc': 0.83},
           {'epoch': 2, 'loss': 0.4, 'train_acc': 0.85, 'test_acc': 0.87},
           {'epoch': 3, 'loss': 0.3, 'train_acc': 0.89, 'test_acc': 0.90}]


def test_plot_history_draws_loss_and_both_accuracies_per_epoch():
    fig = plot_history(HISTORY, title='run')
    ax_loss, ax_acc = fig.axes
    (loss,) = ax_loss.get_lines()
    assert list(loss.get_xdata()) == [1, 2, 3] and list(loss.get_ydata()) == [0.9, 0.4, 0.3]
    train, test = ax_acc.get_lines()
    assert list(train.get_ydata()) == [0.66, 0.85, 0.89]
    assert list(test.get_ydata()) == [0.83, 0.87, 0.90]
    assert fig._suptitle.get_text() == 'run'


def test_plot_history_needs_an_epoch():
    with pytest.raises(ValueError, match='at least one epoch'):
        plot_history([])


def point(epoch, loss=0.5, train_acc=0.8, lr=0.05):
    return {'epoch': epoch, 'loss': loss, 'train_acc': train_acc, 'lr': lr}


def test_plot_history_draws_the_points_of_a_running_epoch_after_the_finished_ones():
    done = [dict(HISTORY[0], points=[point(0.5, 1.2), point(1.0, 0.6)])]
    fig = plot_history(done, points=[point(1.5, 0.45)])
    fine, mean = fig.axes[0].get_lines()
    assert list(fine.get_xdata()) == [0.5, 1.0, 1.5] and list(fine.get_ydata()) == [1.2, 0.6, 0.45]
    assert list(mean.get_xdata()) == [1]
    assert list(fig.axes[0].get_xticks()) == [0, 1, 2]
    # Before the first epoch ends, its points alone.
    fig = plot_history([], points=[point(0.25)])
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]


def test_live_curves_outside_jupyter_print_each_point(capsys):
    curves = LiveCurves('run')
    curves.add_point(point(0.5, 1.23456, 0.4321))
    curves.add_point(point(1.0))
    assert capsys.readouterr().out.splitlines() == [
        '  epoch 0.50: loss 1.2346, train acc 0.432, lr 0.05',
        '  epoch 1.00: loss 0.5000, train acc 0.800, lr 0.05']
    curves.add_epoch(HISTORY[0])
    assert curves.history == [HISTORY[0]] and curves.points == []
    assert plt.get_fignums() == []  # no figure is drawn (or left open) outside Jupyter


class FixedClassifier(gluon.Block):
    """Predicts class ``i % 10`` for the ``i``-th image of a batch."""

    def forward(self, X):
        scores = np.zeros((X.shape[0], 10), dtype='float32')
        scores[np.arange(X.shape[0]), np.arange(X.shape[0]) % 10] = 1
        return nd.array(scores)


def test_show_predictions_titles_predicted_over_true_and_marks_mistakes_red():
    X = nd.zeros((5, 1, 28, 28))
    y = nd.array([0, 1, 5, 3, 9])  # images 2 and 4 are predicted as 2 and 4: wrong
    fig = show_predictions(FixedClassifier(), X, y, num_rows=2, num_cols=3)
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles[:5]] == [
        f'{TEXT_LABELS[p]}\n{TEXT_LABELS[t]}' for p, t in zip(range(5), [0, 1, 5, 3, 9])]
    red = [mcolors.same_color(t.get_color(), 'red') for t in titles[:5]]
    assert red == [False, False, True, False, True]
    assert titles[5].get_text() == ''  # the unused sixth cell stays empty


def test_show_predictions_needs_an_image():
    with pytest.raises(ValueError, match='at least one image'):
        show_predictions(FixedClassifier(), nd.zeros((2, 1, 28, 28)), nd.zeros((2,)), num_rows=0)


def test_plot_confusion_shows_counts_on_row_fractions():
    matrix = np.zeros((10, 10), dtype=int)
    matrix[0, 0], matrix[0, 6], matrix[1, 1] = 3, 1, 4
    fig = plot_confusion(matrix, title='test set')
    ax = fig.axes[0]
    fractions = ax.images[0].get_array()
    assert fractions[0, 0] == pytest.approx(0.75) and fractions[0, 6] == pytest.approx(0.25)
    assert fractions[2].sum() == 0  # a class with no images is an empty row, not a division by 0
    counts = {(t.get_position()[1], t.get_position()[0]): t.get_text() for t in ax.texts}
    assert counts[(0, 0)] == '3' and counts[(0, 6)] == '1' and counts[(1, 1)] == '4'
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TEXT_LABELS)
    assert ax.get_title() == 'test set'


def test_plot_histories_draws_each_runs_loss_and_test_accuracy_in_one_colour():
    finer = [dict(h, points=[{'epoch': h['epoch'] - 0.5, 'loss': h['loss'] + 0.1,
                              'train_acc': 0.5},
                             {'epoch': h['epoch'], 'loss': h['loss'], 'train_acc': 0.6}])
             for h in HISTORY]
    fig = plot_histories({'yours': HISTORY[:1], 'reference': finer}, title='two runs')
    ax_loss, ax_acc = fig.axes
    yours, reference = ax_loss.get_lines()
    assert list(yours.get_xdata()) == [1] and list(reference.get_xdata()) == [0.5, 1, 1.5, 2,
                                                                             2.5, 3]
    assert [list(line.get_ydata()) for line in ax_acc.get_lines()] == [[0.83], [0.83, 0.87, 0.9]]
    assert [line.get_color() for line in ax_acc.get_lines()] == [yours.get_color(),
                                                                 reference.get_color()]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ['yours', 'reference']
    assert fig._suptitle.get_text() == 'two runs'
    with pytest.raises(ValueError, match='at least one run'):
        plot_histories({'empty': []})
