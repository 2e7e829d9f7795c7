"""What defines a training run: :class:`RunConfig`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from .base import check_positive
from .model import INITS, check_resize, check_sizes, narrow, parse_arch

# Learning-rate schedules over the whole run (see vgg.optim).
SCHEDULES = ('constant', 'step', 'cosine')


@dataclass(frozen=True)
class RunConfig:
    """What defines a training run; the defaults are the chapter's settings.

    A numpy scalar setting is taken as the Python value it holds (``np.int64(3)`` as 3).

    Attributes
    ----------
    arch : str
        'vgg11', 'vgg13', 'vgg16' or 'vgg19', or one of them with '_bn' (batch
        normalisation after every convolution): :data:`vgg.model.ARCH_NAMES`.
    ratio : float
        Every block's channel count is divided by it.
    resize : int
        Image height and width.
    epochs : int
        Total number of epochs of the run.
    batch_size : int
        Images per batch (of the whole job, when several workers share it).
    lr : float
        SGD learning rate.
    seed : int, optional
        Seed of MXNet, numpy, Python and the shuffling; None for a random run.
    max_samples : int, optional
        Use only the first ``max_samples`` images of each split.
    init : str
        'xavier' (the chapter's) or 'msra' (He et al.'s, for ReLU networks).
    momentum, wd : float
        SGD momentum and weight decay (the chapter uses neither).
    lr_schedule : str
        'constant' (the chapter's), 'step' (x0.1 at 1/2 and 3/4 of the run) or
        'cosine' (to 0 at the end), after ``warmup_epochs`` of linear warm-up.
    warmup_epochs : float
        Epochs over which the learning rate rises linearly from 0 to ``lr``.
    init_from : str, optional
        Run directory of a trained shallower network to start from, as the
        paper trains its deeper configurations (:func:`vgg.init_from`).
    model_zoo : str, optional
        Start from the weights of MXNet's model zoo network of this name
        (:func:`vgg.from_model_zoo`); ``arch`` must be the same and ``ratio`` 1.
    model_zoo_params : str, optional
        The zoo's parameter file; default MXNet's model store.
    """

    arch: str = 'vgg11'
    ratio: float = 4
    resize: int = 224
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    seed: Optional[int] = None
    max_samples: Optional[int] = None
    init: str = 'xavier'
    momentum: float = 0.0
    wd: float = 0.0
    lr_schedule: str = 'constant'
    warmup_epochs: float = 0.0
    init_from: Optional[str] = None
    model_zoo: Optional[str] = None
    model_zoo_params: Optional[str] = None

    # Settings that a resumed run may change; every other one must stay.  The learning
    # rate may change (to go on from a diverged run's last good epoch) only while it is
    # constant: a schedule is part of the saved optimizer state.
    CHANGEABLE_ON_RESUME = ('epochs', 'lr')
    # MXNet seeds are 0 .. 2**32 - 1, and a run seeds with seed + epochs done + worker rank.
    MAX_SEED = 2 ** 31 - 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.generic):
                # A numpy scalar (a seed from a numpy array, say) as the Python value it holds:
                # np.int64(3) is 3 and passes, np.float64(3) is 3.0 and np.bool_ a bool, which
                # do not; and to_dict stays JSON.
                object.__setattr__(self, field.name, value.item())
        for name in ('resize', 'epochs', 'batch_size'):
            check_positive(name, getattr(self, name), int)
        check_positive('lr', self.lr)
        if self.max_samples is not None:
            check_positive('max_samples', self.max_samples, int)
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise ValueError(f'seed must be an integer, got {self.seed!r}')
        if self.seed is not None and not 0 <= self.seed <= self.MAX_SEED:
            raise ValueError(f'seed must be between 0 and {self.MAX_SEED}, got {self.seed}')
        if not isinstance(self.arch, str):
            raise ValueError(f'arch must be a name such as vgg11, got {self.arch!r}')
        conv_arch = narrow(parse_arch(self.arch)[0], self.ratio)
        check_resize(conv_arch, self.resize)
        check_sizes(conv_arch, self.resize, batch_size=self.batch_size)
        _check_choice('init', self.init, tuple(INITS))
        _check_choice('lr_schedule', self.lr_schedule, SCHEDULES)
        for name in ('momentum', 'wd', 'warmup_epochs'):
            value = getattr(self, name)
            if value != 0:  # zero is the chapter's (none)
                check_positive(name, value)
        if not self.momentum < 1:
            raise ValueError(f'momentum must be below 1, got {self.momentum!r}')
        if not self.warmup_epochs < self.epochs:
            raise ValueError(f'warmup_epochs {self.warmup_epochs} must be fewer than the '
                             f'{self.epochs} epochs of the run')
        for name in ('init_from', 'model_zoo', 'model_zoo_params'):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f'{name} must be a name or a path, got {value!r}')
        if self.init_from and self.model_zoo:
            raise ValueError('init_from and model_zoo exclude each other: start from one')
        if self.model_zoo_params and not self.model_zoo:
            raise ValueError('model_zoo_params needs model_zoo, the name of the network')
        if self.model_zoo and (self.model_zoo.lower() != self.arch.lower() or self.ratio != 1):
            raise ValueError(f'model_zoo {self.model_zoo} needs arch {self.model_zoo.lower()} '
                             f'and ratio 1 (the zoo network\'s own widths), got arch '
                             f'{self.arch} and ratio {self.ratio}')

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> 'RunConfig':
        """A new run's configuration from the settings given, the chapter's for the rest;
        with ``model_zoo``, ``arch`` and ``ratio`` default to the zoo network's own.

        Raises
        ------
        ValueError
            If a setting is unknown or invalid.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f'unknown setting {unknown[0]!r}; the settings are '
                             f'{", ".join(sorted(names))}')
        settings = dict(settings)
        if settings.get('model_zoo'):
            settings.setdefault('arch', str(settings['model_zoo']).lower())
            settings.setdefault('ratio', 1)
        return cls(**settings)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> 'RunConfig':
        """The configuration held by ``record``; keys that are not settings are ignored.

        Raises
        ------
        ValueError
            If a setting is invalid.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in record.items() if name in names})

    def resumed(self, given: Mapping[str, Any]) -> 'RunConfig':
        """This (saved) configuration with the settings ``given`` for a resume applied.

        Only :attr:`CHANGEABLE_ON_RESUME` may change; any other setting must
        equal the saved one.

        Raises
        ------
        ValueError
            Naming the first setting that contradicts the saved configuration.
        """
        changes_lr = 'lr' in given and given['lr'] != self.lr
        if changes_lr and (self.lr_schedule != 'constant' or self.warmup_epochs):
            raise ValueError(f'lr {given["lr"]} conflicts with the run\'s lr {self.lr}: the '
                             f'run follows a {self.lr_schedule} schedule with warm-up '
                             f'{self.warmup_epochs}, saved with its optimizer; start a new run')
        for name, value in given.items():
            if name not in self.CHANGEABLE_ON_RESUME and value != getattr(self, name, value):
                raise ValueError(f"{name} {value} conflicts with the run's {name} "
                                 f'{getattr(self, name)}; keep it to resume, or start a new run')
        return dataclasses.replace(self, **{k: v for k, v in given.items()
                                            if k in self.CHANGEABLE_ON_RESUME})


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f'unknown {name} {value!r}; choose one of {", ".join(choices)}')
