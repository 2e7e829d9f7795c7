"""Learning-rate schedules and SGD options: the chapter's plain SGD by default."""
import pytest

from vgg.config import RunConfig
from vgg.optim import lr_scheduler, sgd_options


def rates(schedule, updates):
    return [schedule(k) for k in range(updates + 1)]


def test_the_chapters_run_gets_plain_sgd():
    assert lr_scheduler('constant', 0.05, 3, 469) is None
    assert sgd_options(RunConfig(), 469) == {}


def test_warmup_rises_linearly_then_stays():
    lr = rates(lr_scheduler('constant', 0.1, 2, 10, warmup_epochs=0.5), 20)
    assert lr[:6] == pytest.approx([0, 0.02, 0.04, 0.06, 0.08, 0.1])
    assert lr[6:] == pytest.approx([0.1] * 15)


def test_step_divides_by_ten_after_half_and_three_quarters():
    lr = rates(lr_scheduler('step', 0.1, 4, 10), 40)
    assert lr[1:21] == pytest.approx([0.1] * 20)
    assert lr[21:31] == pytest.approx([0.01] * 10)
    assert lr[31:] == pytest.approx([0.001] * 10)


def test_cosine_falls_from_lr_to_zero_after_warmup():
    lr = rates(lr_scheduler('cosine', 0.1, 2, 10, warmup_epochs=1), 20)
    assert lr[10] == pytest.approx(0.1) and lr[15] == pytest.approx(0.05)
    assert lr[20] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_options_carry_what_the_config_sets():
    options = sgd_options(RunConfig(momentum=0.9, wd=1e-4, lr_schedule='cosine'), 5)
    assert options['momentum'] == 0.9 and options['wd'] == 1e-4
    lr = rates(options['lr_scheduler'], 15)  # 3 epochs of 5 updates
    assert lr[0] == pytest.approx(0.05) and lr[15] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize('settings, message', [
    ({'momentum': 1.0}, 'momentum must be below 1'),
    ({'momentum': -0.5}, 'momentum must be positive'),
    ({'wd': -1}, 'wd must be positive'),
    ({'lr_schedule': 'linear'}, "unknown lr_schedule 'linear'"),
    ({'warmup_epochs': 3}, 'warmup_epochs 3 must be fewer than the 3 epochs'),
    ({'init': 'he'}, "unknown init 'he'"),
])
def test_bad_optimiser_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**settings)


def test_a_warmup_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match='leaves none of the 20 updates'):
        lr_scheduler('cosine', 0.1, 2, 10, warmup_epochs=2)
