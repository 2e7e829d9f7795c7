"""What defines a training run (:class:`RunConfig`) and the one check of positive numbers."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

import numpy as np

from .model import check_resize, conv_arch_by_name, narrow

# MXNet hands settings such as the learning rate to its kernels as float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
Number = Union[int, float]


def check_positive(name: str, value: Any, kind: Union[Type, Tuple[Type, ...]] = (int, float)
                   ) -> Number:
    """Return ``value`` if it is a positive number of ``kind`` within float32's range.

    The one validator of counts and sizes used by the library and the command line.

    Raises
    ------
    ValueError
        Naming ``name`` and what is wrong (not a number, not positive, too large).
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = 'an integer' if kinds == (int,) else 'a number'
        raise ValueError(f'{name} must be {what}, got {value!r}')
    if not value > 0:
        raise ValueError(f'{name} must be positive, got {value!r}')
    if not value <= FLOAT32_MAX:
        raise ValueError(f'{name} {value!r} is too large (float32 holds at most {FLOAT32_MAX:.3g})')
    return value


@dataclass(frozen=True)
class RunConfig:
    """What defines a training run; the defaults are the chapter's settings.

    Attributes
    ----------
    arch : str
        'vgg11', 'vgg13', 'vgg16' or 'vgg19'.
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
    """

    arch: str = 'vgg11'
    ratio: float = 4
    resize: int = 224
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    seed: Optional[int] = None
    max_samples: Optional[int] = None

    # Settings that a resumed run must keep; epochs may grow.
    FIXED_ON_RESUME = ('arch', 'ratio', 'resize', 'batch_size', 'lr', 'seed', 'max_samples')

    def __post_init__(self) -> None:
        for name in ('resize', 'epochs', 'batch_size'):
            check_positive(name, getattr(self, name), int)
        check_positive('lr', self.lr)
        if self.max_samples is not None:
            check_positive('max_samples', self.max_samples, int)
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise ValueError(f'seed must be an integer, got {self.seed!r}')
        if not isinstance(self.arch, str):
            raise ValueError(f'arch must be a name such as vgg11, got {self.arch!r}')
        check_resize(narrow(conv_arch_by_name(self.arch), self.ratio), self.resize)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

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

        Only ``epochs`` may change; any other setting must equal the saved one.

        Raises
        ------
        ValueError
            Naming the first setting that contradicts the saved configuration.
        """
        for name, value in given.items():
            if name in self.FIXED_ON_RESUME and value != getattr(self, name):
                raise ValueError(f"{name} {value} conflicts with the run's {name} "
                                 f'{getattr(self, name)}; keep it to resume, or start a new run')
        return dataclasses.replace(self, **{k: v for k, v in given.items() if k == 'epochs'})
