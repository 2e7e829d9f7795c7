"""Run directories: configuration, per-epoch metrics, learning curves and checkpoints.

Layout of a run directory::

    config.json          the configuration (RunConfig) and the data folder
    metrics.jsonl        one JSON line per completed epoch (the commit record)
    history.png          learning curves, redrawn after every epoch
    checkpoints/
        epoch-NNNN.params  the network's parameters after epoch NNNN (the last one only)
        epoch-NNNN.states  the trainer's state after epoch NNNN
    confusion.png        written by ``vgg evaluate``
    export/              written by ``vgg export``: vgg-symbol.json, vgg-0000.params, vgg.onnx

Every file is written to a temporary file in the same folder, flushed to disk
and renamed over its target, so a crash never leaves a half-written file under
a real name.  An epoch counts as done once ``metrics.jsonl`` lists it; that
file is written after the epoch's checkpoint, and the previous checkpoint is
removed only then, so the checkpoint of the last listed epoch always exists.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import matplotlib.pyplot as plt
import mxnet as mx
import numpy as np
from mxnet import gluon

from .model import build_net, check_resize, conv_arch_by_name, narrow
from .plots import plot_history

CONFIG, METRICS, CURVES, CHECKPOINTS = 'config.json', 'metrics.jsonl', 'history.png', 'checkpoints'
CONFUSION, EXPORT = 'confusion.png', 'export'
_TEMP_SUFFIX = '.tmp'
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` all at once: ``write(temp_path)``, fsync, then rename.

    Parameters
    ----------
    path : str
        The file to create or replace.
    write : callable
        Writes the whole content to the temporary path it is given (in the same folder).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}{_TEMP_SUFFIX}')
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    # The rename itself is durable only once the folder's entry is on disk.
    _fsync_dir(directory)


def write_text(path: str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
    atomic_write(path, write)


def save_figure(fig, path: str) -> None:
    """Atomically save a matplotlib figure as PNG, then close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
    finally:
        plt.close(fig)


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
        Images per batch.
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

    def __post_init__(self) -> None:
        for name in ('resize', 'epochs', 'batch_size'):
            _check_number(name, getattr(self, name), int)
        _check_number('lr', self.lr, (int, float))
        if self.max_samples is not None:
            _check_number('max_samples', self.max_samples, int)
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise ValueError(f'seed must be an integer, got {self.seed!r}')
        conv_arch = narrow(conv_arch_by_name(self.arch), self.ratio)
        check_resize(conv_arch, self.resize)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _check_number(name: str, value: Any, kinds) -> None:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f'{name} must be a number, got {value!r}')
    if not value > 0:
        raise ValueError(f'{name} must be positive, got {value!r}')
    # MXNet hands settings such as the learning rate to its kernels as float32.
    if not value <= _FLOAT32_MAX:
        raise ValueError(f'{name} {value!r} is too large '
                         f'(float32 holds at most {_FLOAT32_MAX:.3g})')


class Run:
    """A run directory (see the module's docstring for its layout).

    Parameters
    ----------
    path : str
        The folder; it need not exist yet.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def file(self, *names: str) -> str:
        """Path of a file inside the run directory."""
        return os.path.join(self.path, *names)

    def exists(self) -> bool:
        """Whether the folder holds a run (a configuration)."""
        return os.path.isfile(self.file(CONFIG))

    def checkpoint(self, epoch: int) -> Dict[str, str]:
        """Paths of the checkpoint after ``epoch``: ``{'params': ..., 'states': ...}``."""
        stem = self.file(CHECKPOINTS, f'epoch-{epoch:04d}')
        return {'params': stem + '.params', 'states': stem + '.states'}

    def prepare(self, existing: str = 'refuse') -> None:
        """Create the folders and check they can be written, before any work is done.

        Parameters
        ----------
        existing : {'refuse', 'keep', 'overwrite'}
            What to do with a run the folder already holds: raise, keep it (to
            resume it), or remove its files.

        Raises
        ------
        ValueError
            If the folder cannot be written, or holds a run and ``existing`` is 'refuse'.
        """
        if existing == 'refuse' and self.exists():
            raise ValueError(f'{self.path} already holds a run ({len(self.history())} of '
                             f'{self.config().epochs} epochs done); continue it with --resume '
                             'or start it over with --force')
        try:
            os.makedirs(self.file(CHECKPOINTS), exist_ok=True)
            write_text(self.file('.write-test'), '')
            os.remove(self.file('.write-test'))
        except OSError as err:
            raise ValueError(f'cannot write to output directory {self.path}: '
                             f'{err.strerror or err}') from None
        if existing == 'overwrite':
            self._clear()
        self._remove_temporaries()

    def _clear(self) -> None:
        # Only this module's own files: the folder may hold other things of the user's.
        for name in (CONFIG, METRICS, CURVES, CONFUSION):
            if os.path.exists(self.file(name)):
                os.remove(self.file(name))
        for path in glob.glob(self.file(CHECKPOINTS, 'epoch-*')):
            os.remove(path)
        shutil.rmtree(self.file(EXPORT), ignore_errors=True)

    def _remove_temporaries(self) -> None:
        # Left behind by a process killed in the middle of a write.
        for folder in (self.path, self.file(CHECKPOINTS)):
            for path in glob.glob(os.path.join(folder, '.*' + _TEMP_SUFFIX)):
                os.remove(path)

    def start(self, config: RunConfig, data_dir: Optional[str] = None) -> None:
        """Write the configuration: from now on the folder holds a run (with no epoch done)."""
        record = dict(config.to_dict(), data_dir=data_dir and os.path.abspath(data_dir))
        write_text(self.file(CONFIG), json.dumps(record, indent=2) + '\n')
        write_text(self.file(METRICS), '')

    def _read_config(self) -> Dict[str, Any]:
        if not self.exists():
            raise ValueError(f'{self.path} holds no run ({CONFIG} is missing)')
        try:
            with open(self.file(CONFIG), encoding='utf-8') as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError('not a JSON object')
        except ValueError as err:
            raise ValueError(f'{self.file(CONFIG)} is corrupt ({err})') from None
        return record

    def config(self) -> RunConfig:
        """The run's configuration.

        Raises
        ------
        ValueError
            If there is no run, or ``config.json`` is corrupt or has invalid settings.
        """
        record = self._read_config()
        record.pop('data_dir', None)
        try:
            return RunConfig(**record)
        except TypeError as err:
            raise ValueError(f'{self.file(CONFIG)} is corrupt ({err})') from None
        except ValueError as err:
            raise ValueError(f'{self.file(CONFIG)}: {err}') from None

    def data_dir(self) -> Optional[str]:
        """The data folder the run was trained with, if one was given."""
        return self._read_config().get('data_dir')

    def set_epochs(self, epochs: int) -> RunConfig:
        """Change the run's total number of epochs (to train it on); returns the new config."""
        done = len(self.history())
        if epochs < done:
            raise ValueError(f'epochs {epochs} is fewer than the {done} epochs already done '
                             f'in {self.path}')
        record = self._read_config()
        config = dataclasses.replace(self.config(), epochs=epochs)
        record.update(config.to_dict())
        write_text(self.file(CONFIG), json.dumps(record, indent=2) + '\n')
        return config

    def history(self) -> List[Dict[str, float]]:
        """The completed epochs' statistics, in order.

        Raises
        ------
        ValueError
            If ``metrics.jsonl`` is corrupt or its epochs are not 1, 2, 3, ...
        """
        path = self.file(METRICS)
        if not os.path.exists(path):
            return []
        history = []
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                try:
                    stats = json.loads(line)
                    epoch_ok = stats['epoch'] == number
                except (ValueError, TypeError, KeyError):
                    epoch_ok = False
                if not epoch_ok:
                    raise ValueError(f'{path} is corrupt at line {number}; '
                                     f'expected the statistics of epoch {number}')
                history.append(stats)
        return history

    def save_epoch(self, net: gluon.Block, trainer: gluon.Trainer,
                   history: List[Dict[str, float]]) -> None:
        """Checkpoint the epoch that ends ``history``, then commit it to ``metrics.jsonl``.

        Parameters
        ----------
        net, trainer : the network and its trainer after the epoch.
        history : list of dict
            Statistics of every epoch so far (as :func:`vgg.train` returns them).
        """
        epoch = history[-1]['epoch']
        paths = self.checkpoint(epoch)
        atomic_write(paths['params'], net.save_parameters)
        atomic_write(paths['states'], trainer.save_states)
        write_text(self.file(METRICS), ''.join(json.dumps(h) + '\n' for h in history))
        for path in self.checkpoint(epoch - 1).values():
            if os.path.exists(path):
                os.remove(path)
        save_figure(plot_history(history, title=os.path.basename(self.path)), self.file(CURVES))

    def saver(self, net: gluon.Block,
              trainer: gluon.Trainer) -> Callable[[Dict[str, float]], None]:
        """An ``on_epoch_end`` for :func:`vgg.train` that saves every epoch with :meth:`save_epoch`."""
        history = self.history()

        def save(stats: Dict[str, float]) -> None:
            history.append(stats)
            self.save_epoch(net, trainer, history)
        return save

    def load_params(self, net: gluon.Block, ctx: Optional[List[mx.Context]] = None) -> int:
        """Load the last completed epoch's parameters into ``net``; returns that epoch.

        Raises
        ------
        ValueError
            If no epoch is done, or the checkpoint is missing, truncated, or
            belongs to another network.
        """
        epoch = len(self.history())
        if epoch == 0:
            raise ValueError(f'{self.path} has no completed epoch yet, so no parameters')
        path = self._existing(epoch, 'params')
        try:
            net.load_parameters(path, ctx=ctx)
        except mx.base.MXNetError:
            raise ValueError(f'checkpoint {path} is truncated or corrupt') from None
        except (AssertionError, ValueError) as err:
            # MXNet's message goes on to list every parameter of the file: keep its first part.
            detail = str(err).split(', which contains')[0]
            config = self.config()
            raise ValueError(f'checkpoint {path} does not fit the run\'s network '
                             f'({config.arch}, ratio {config.ratio}): {detail}') from None
        return epoch

    def restore(self, net: gluon.Block, trainer: gluon.Trainer,
                ctx: Optional[List[mx.Context]] = None) -> int:
        """Load parameters and trainer state of the last completed epoch; returns it (0: none)."""
        if not self.history():
            return 0
        epoch = self.load_params(net, ctx)
        path = self._existing(epoch, 'states')
        try:
            trainer.load_states(path)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                mx.base.MXNetError):
            raise ValueError(f'trainer state {path} is truncated or corrupt') from None
        return epoch

    def _existing(self, epoch: int, kind: str) -> str:
        path = self.checkpoint(epoch)[kind]
        if not os.path.isfile(path):
            raise ValueError(f'checkpoint {path} is missing '
                             f'({METRICS} records epoch {epoch} as done)')
        return path

    def load_net(self, ctx: Optional[List[mx.Context]] = None) -> gluon.HybridBlock:
        """The trained network of the last completed epoch, built from ``config.json``."""
        config = self.config()
        net = build_net(config.arch, config.ratio, config.resize, ctx=ctx)
        self.load_params(net, ctx)
        return net
