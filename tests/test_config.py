"""RunConfig and the one validator of positive numbers."""
import dataclasses
import json

import numpy as np
import pytest

from vgg.base import check_positive
from vgg.config import RunConfig


@pytest.mark.parametrize('value, kind, message', [
    (0, int, 'x must be positive, got 0'),
    (-1.5, (int, float), 'x must be positive, got -1.5'),
    (float('nan'), (int, float), 'x must be positive, got nan'),
    (True, int, 'x must be an integer, got True'),
    (2.5, int, 'x must be an integer, got 2.5'),
    ('3', (int, float), "x must be a number, got '3'"),
    (None, (int, float), 'x must be a number, got None'),
    (1e39, (int, float), 'x 1e+39 is too large'),
    (float('inf'), (int, float), 'x inf is too large'),
])
def test_check_positive_rejects(value, kind, message):
    with pytest.raises(ValueError, match='^' + message.replace('+', r'\+')):
        check_positive('x', value, kind)


@pytest.mark.parametrize('value, kind', [(1, int), (3, (int, float)), (1e-8, float),
                                         (3.4e38, (int, float))])
def test_check_positive_returns_good_values(value, kind):
    assert check_positive('x', value, kind) == value


def test_defaults_are_the_chapters_settings():
    assert RunConfig().to_dict() == {'arch': 'vgg11', 'ratio': 4, 'resize': 224, 'epochs': 3,
                                     'batch_size': 128, 'lr': 0.05, 'seed': None,
                                     'max_samples': None, 'init': 'xavier', 'momentum': 0.0,
                                     'wd': 0.0, 'lr_schedule': 'constant', 'warmup_epochs': 0.0,
                                     'init_from': None, 'model_zoo': None,
                                     'model_zoo_params': None}


def test_model_zoo_settings_default_to_the_zoo_networks_widths():
    config = RunConfig.from_settings({'model_zoo': 'vgg16_bn', 'epochs': 1})
    assert (config.arch, config.ratio) == ('vgg16_bn', 1)
    with pytest.raises(ValueError, match='model_zoo vgg16 needs arch vgg16 and ratio 1'):
        RunConfig.from_settings({'model_zoo': 'vgg16', 'ratio': 4})
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        RunConfig.from_settings({'epoch': 3})
    with pytest.raises(ValueError, match='exclude each other'):
        RunConfig.from_settings({'model_zoo': 'vgg11', 'init_from': 'runs/a'})


@pytest.mark.parametrize('settings, message', [
    ({'epochs': 0}, 'epochs must be positive'),
    ({'batch_size': 1.5}, 'batch_size must be an integer'),
    ({'lr': '0.1'}, 'lr must be a number'),
    ({'max_samples': -3}, 'max_samples must be positive'),
    ({'seed': True}, 'seed must be an integer'),
    ({'seed': 1.0}, 'seed must be an integer'),
    ({'arch': 'vgg12'}, "unknown architecture 'vgg12'"),
    ({'arch': 5}, 'arch must be a name'),
    ({'ratio': 128}, 'leaves a block with 0 channels'),
    ({'resize': 16}, 'resize 16 is too small'),
])
def test_invalid_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**settings)


def test_from_dict_takes_the_settings_and_ignores_the_rest_of_the_record():
    record = dict(RunConfig(resize=96, seed=3).to_dict(), data_dir='/data', sessions=[])
    assert RunConfig.from_dict(record) == RunConfig(resize=96, seed=3)
    with pytest.raises(ValueError, match='lr must be a number'):
        RunConfig.from_dict(dict(record, lr=None))


def test_resumed_may_only_change_the_epochs():
    saved = RunConfig(resize=96, epochs=2, seed=0)
    assert saved.resumed({'epochs': 5}) == dataclasses.replace(saved, epochs=5)
    assert saved.resumed(saved.to_dict()) == saved
    assert saved.resumed({'lr': 0.01}).lr == 0.01  # a constant rate may be lowered
    with pytest.raises(ValueError, match="batch_size 64 conflicts with the run's batch_size 128"):
        saved.resumed({'batch_size': 64, 'epochs': 5})
    with pytest.raises(ValueError, match='follows a cosine schedule'):
        dataclasses.replace(saved, lr_schedule='cosine').resumed({'lr': 0.01})
    with pytest.raises(ValueError, match="seed None conflicts with the run's seed 0"):
        saved.resumed(RunConfig(resize=96).to_dict())


def test_numpy_integers_are_integers_and_are_kept_as_plain_ints():
    config = RunConfig(seed=np.int64(3), epochs=np.int32(2), batch_size=np.uint16(64),
                       max_samples=np.int64(100), resize=np.int64(96))
    assert config == RunConfig(seed=3, epochs=2, batch_size=64, max_samples=100, resize=96)
    assert type(config.seed) is int and type(config.epochs) is int
    json.dumps(config.to_dict())  # what a run directory's config.json holds


@pytest.mark.parametrize('seed', [np.float64(3.0), np.float32(3), np.bool_(True), True, 3.0])
def test_numpy_floats_and_bools_are_still_not_seeds(seed):
    with pytest.raises(ValueError, match='seed must be an integer'):
        RunConfig(seed=seed)
