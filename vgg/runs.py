"""Run directories: configuration, per-epoch metrics, learning curves and checkpoints.

Layout of a run directory::

    config.json          the configuration (RunConfig), the data folder the run used,
                         and the machine and package versions of every session
    metrics.jsonl        one JSON line per completed epoch (the commit record), with
                         its finer history ("points")
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
A reader of a run that is training loads a whole checkpoint, that of the
last epoch listed when it opened the file (:meth:`Run.load_params`).

``checkpoints/`` and ``export/`` are the run's own: files are written and
removed there, so a symbolic link in their place (to a folder that another
run may use too) is refused rather than followed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import pickle
import shutil
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
from mxnet import gluon

from .base import TEMP_SUFFIX, allocation_failure, atomic_write, file_digest, write_text
from .config import RunConfig

CONFIG, METRICS, CURVES, CHECKPOINTS = 'config.json', 'metrics.jsonl', 'history.png', 'checkpoints'
CONFUSION, EXPORT = 'confusion.png', 'export'
LOCK = '.lock'  # flock'ed by the one process that writes the run
# What every metrics line holds (as numbers), and every point of its finer history.
EPOCH_FIELDS = ('epoch', 'loss', 'train_acc', 'test_acc', 'time', 'images_per_sec')
POINT_FIELDS = ('epoch', 'loss', 'train_acc')
# How often a reader looks again when the writer moved on while it opened a checkpoint:
# each look takes a moment, and an epoch far longer.
_READ_TRIES = 5
def _numbers(record: Dict[str, Any], names) -> bool:
    return all(isinstance(record[name], (int, float)) and not isinstance(record[name], bool)
               for name in names)


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

    def folder(self, name: str) -> str:
        """Path of a folder of the run (``checkpoints``, ``export``), refused if it is a link.

        Files are written into these folders and removed from them (the previous
        checkpoint, ``--force``): through a symbolic link that would be done in a
        folder that another run may use as well.

        Raises
        ------
        ValueError
            If the folder is a symbolic link.
        """
        path = self.file(name)
        if os.path.islink(path):
            raise ValueError(f'{path} is a symbolic link (to {os.readlink(path)}), and a run '
                             f'writes and removes files in its {name} folder, which must be its '
                             'own: replace the link by a folder (to keep a run on another disk, '
                             'link the run directory itself)')
        return path

    def checkpoint(self, epoch: int) -> Dict[str, str]:
        """Paths of the checkpoint after ``epoch``: ``{'params': ..., 'states': ...}``."""
        stem = os.path.join(self.folder(CHECKPOINTS), f'epoch-{epoch:04d}')
        return {'params': stem + '.params', 'states': stem + '.states'}

    def prepare(self, existing: str = 'refuse') -> None:
        """Create the folders and check they can be written, before any work is done.

        Nothing is removed here: a run to be replaced is removed by :meth:`clear`
        once the new run is known to start.

        Parameters
        ----------
        existing : {'refuse', 'keep', 'overwrite'}
            What to do with a run the folder already holds: raise, or accept it
            (to resume it, or to replace it).

        Raises
        ------
        ValueError
            If the folder cannot be written, or holds a run and ``existing`` is 'refuse'.
        """
        if existing == 'refuse' and self.exists():
            raise ValueError(f'{self.path} already holds a run ({len(self.history())} of '
                             f'{self.config().epochs} epochs done); continue it with --resume '
                             'or start it over with --force')
        checkpoints = self.folder(CHECKPOINTS)
        self.folder(EXPORT)
        try:
            os.makedirs(checkpoints, exist_ok=True)
            write_text(self.file('.write-test'), '')
            os.remove(self.file('.write-test'))
        except OSError as err:
            raise ValueError(f'cannot write to output directory {self.path}: '
                             f'{err.strerror or err}') from None
        self._remove_temporaries()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory as its one writer, until the block ends.

        A kernel lock (flock) on ``.lock``: a second process is refused at once,
        naming the holder, and the lock goes with its process, ``kill -9`` included.

        Raises
        ------
        ValueError
            If another process holds the run, or ``.lock`` is a symbolic link
            (another run's lock, or a file outside the run, would be written).
        """
        if os.path.islink(self.file(LOCK)):
            raise ValueError(f'{self.file(LOCK)} is a symbolic link (to '
                             f'{os.readlink(self.file(LOCK))}); a run\'s lock must be its own '
                             'file: remove the link')
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f'cannot write to output directory {self.path}: '
                             f'{err.strerror or err}') from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
                raise ValueError(f'{self.path} is being written by another process (pid '
                                 f'{holder}); wait for it to end, stop it, or train into '
                                 'another folder') from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Remove the run's files; only this module's own: the folder may hold the user's.

        Nothing is removed through a symbolic link: a linked folder is refused
        (:meth:`folder`) before any file goes, and a linked file loses only its link.
        """
        checkpoints, export = self.folder(CHECKPOINTS), self.folder(EXPORT)
        for name in (CONFIG, METRICS, CURVES, CONFUSION):
            if os.path.lexists(self.file(name)):
                os.remove(self.file(name))
        for path in glob.glob(os.path.join(checkpoints, 'epoch-*')):
            os.remove(path)
        shutil.rmtree(export, ignore_errors=True)

    def _remove_temporaries(self) -> None:
        # Left behind by a process killed in the middle of a write.
        for folder in (self.path, self.folder(CHECKPOINTS)):
            for path in glob.glob(os.path.join(folder, '.*' + TEMP_SUFFIX)):
                os.remove(path)

    def start(self, config: RunConfig, data_dir: Optional[str] = None,
              session: Optional[Dict[str, Any]] = None) -> None:
        """Write the configuration: from now on the folder holds a run (with no epoch done).

        Parameters
        ----------
        config : RunConfig
        data_dir : str, optional
            The folder the data was read from.
        session : dict, optional
            Where and with what this session runs (:func:`vgg.devices.environment`).
        """
        record = dict(config.to_dict(), data_dir=data_dir and os.path.abspath(data_dir),
                      sessions=[dict(session or {}, from_epoch=0)])
        self._write_config(record)
        write_text(self.file(METRICS), '')

    def add_session(self, data_dir: Optional[str], session: Dict[str, Any]) -> None:
        """Record a resumed session: its data folder and environment (appended to ``sessions``)."""
        record = self._read_config()
        record['data_dir'] = data_dir and os.path.abspath(data_dir)
        record.setdefault('sessions', []).append(dict(session, from_epoch=len(self.history())))
        self._write_config(record)

    def _write_config(self, record: Dict[str, Any]) -> None:
        write_text(self.file(CONFIG), json.dumps(record, indent=2) + '\n')

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
        try:
            return RunConfig.from_dict(self._read_config())
        except ValueError as err:
            raise ValueError(f'{self.file(CONFIG)}: {err}') from None

    def sessions(self) -> List[Dict[str, Any]]:
        """Where each session of the run computed (:func:`vgg.devices.environment`), in order;
        ``from_epoch`` is the number of epochs done when it started."""
        sessions = self._read_config().get('sessions', [])
        if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
            raise ValueError(f'{self.file(CONFIG)}: sessions must be a list of records')
        return sessions

    def resumable(self, config: RunConfig) -> bool:
        """Whether ``fit(config, out=self.path, resume=True)`` continues this run: the folder
        holds a readable run of the same settings (``epochs`` may be more) with at least one
        finished epoch and no more than ``config.epochs``."""
        try:
            saved, done = self.config(), len(self.history())
        except ValueError:
            return False
        same = dataclasses.replace(saved, epochs=config.epochs) == config
        return same and 0 < done <= config.epochs

    def data_dir(self) -> Optional[str]:
        """The data folder the run was trained with (None in runs that did not record it)."""
        data_dir = self._read_config().get('data_dir')
        if data_dir is not None and not isinstance(data_dir, str):
            raise ValueError(f'{self.file(CONFIG)}: data_dir must be a folder name, '
                             f'got {data_dir!r}')
        return data_dir

    def update_config(self, config: RunConfig) -> None:
        """Replace the run's settings (those a resume may change), keeping the rest of the
        record."""
        self.check_epochs(config.epochs, len(self.history()))
        record = self._read_config()
        record.update(config.to_dict())
        self._write_config(record)

    def check_epochs(self, epochs: int, done: int) -> None:
        """Refuse to end the run after ``epochs`` when ``done`` epochs of it are finished.

        Raises
        ------
        ValueError
            If ``epochs`` is fewer than ``done``.
        """
        if epochs < done:
            raise ValueError(f'epochs {epochs} is fewer than the {done} epochs already done '
                             f'in {self.path}')

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
                    epoch_ok = (stats['epoch'] == number and _numbers(stats, EPOCH_FIELDS)
                                and all(_numbers(p, POINT_FIELDS)
                                        for p in stats.get('points', []))
                                and all(isinstance(digest, str) for digest in
                                        (stats.get('checkpoint') or {}).values()))
                except (ValueError, TypeError, KeyError, AttributeError):
                    epoch_ok = False
                if not epoch_ok:
                    raise ValueError(f'{path} is corrupt at line {number}; expected the '
                                     f'statistics of epoch {number} ({", ".join(EPOCH_FIELDS)})')
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
        # The checksums go into the commit record: a checkpoint that was corrupted or
        # replaced afterwards is refused before it is loaded (.states is a pickle).
        # Only the last epoch's checkpoint exists, and only its line names one.
        lines = [{k: v for k, v in h.items() if k != 'checkpoint'} for h in history[:-1]]
        lines.append(dict(history[-1], checkpoint={kind: file_digest(path, 'sha256')
                                                   for kind, path in paths.items()}))
        write_text(self.file(METRICS), ''.join(json.dumps(line) + '\n' for line in lines))
        for path in self.checkpoint(epoch - 1).values():
            if os.path.exists(path):
                os.remove(path)

    def load_params(self, net: gluon.Block, ctx: Optional[List[mx.Context]] = None) -> int:
        """Load the last completed epoch's parameters into ``net``; returns that epoch.

        The run may be training meanwhile: what is loaded is a whole checkpoint,
        that of the last epoch ``metrics.jsonl`` lists (:meth:`_checkpoint_files`).

        Raises
        ------
        ValueError
            If no epoch is done, or the checkpoint is missing, truncated, or
            belongs to another network.
        MemoryError
            If there is not enough memory to load it.
        """
        with self._checkpoint_files(('params',)) as (epoch, files):
            self._load_params(net, files['params'], epoch, ctx)
        return epoch

    def restore(self, net: gluon.Block, trainer: gluon.Trainer,
                ctx: Optional[List[mx.Context]] = None) -> int:
        """Load parameters and trainer state of the last completed epoch; returns it (0: none)."""
        if not self.history():
            return 0
        with self._checkpoint_files(('params', 'states')) as (epoch, files):
            self._load_params(net, files['params'], epoch, ctx)
            path = self.checkpoint(epoch)['states']
            try:
                trainer.load_states(files['states'])
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                    mx.base.MXNetError) as err:
                if allocation_failure(err):
                    raise MemoryError(f'loading {path}: {allocation_failure(err)}') from None
                raise ValueError(f'trainer state {path} is truncated or corrupt') from None
        return epoch

    def _load_params(self, net: gluon.Block, opened: str, epoch: int,
                     ctx: Optional[List[mx.Context]]) -> None:
        """``net.load_parameters`` from an opened checkpoint (:meth:`_checkpoint_files`)."""
        path = self.checkpoint(epoch)['params']
        try:
            net.load_parameters(opened, ctx=ctx)
        except mx.base.MXNetError as err:
            if allocation_failure(err):  # not the file's fault: say so, it is not corrupt
                raise MemoryError(f'loading {path}: {allocation_failure(err)}') from None
            raise ValueError(f'checkpoint {path} is truncated or corrupt') from None
        except (AssertionError, ValueError) as err:
            # MXNet's message goes on to list every parameter of the file: keep its first part.
            detail = str(err).split(', which contains')[0].replace(opened, path)
            config = self.config()
            raise ValueError(f'checkpoint {path} does not fit the run\'s network '
                             f'({config.arch}, ratio {config.ratio}): {detail}') from None

    @contextlib.contextmanager
    def _checkpoint_files(self, kinds: Sequence[str]) -> Iterator[Tuple[int, Dict[str, str]]]:
        """The last completed epoch and its checkpoint files, opened and checked.

        Yields ``(epoch, {kind: path})``, where each path reads the opened file
        (``/dev/fd/N``) until the block ends.  A writer may at any moment commit
        the next epoch and remove this one's checkpoint: an opened file is read
        whole whatever happens to its name (files are only ever replaced by a
        rename, never rewritten), and when the file is gone or differs from the
        checksum in ``metrics.jsonl``, the history is read again; only if it has
        not changed meanwhile is the checkpoint at fault.

        Raises
        ------
        ValueError
            If no epoch is done, or the checkpoint is missing or not the file its
            epoch saved.
        """
        history = self.history()
        for _ in range(_READ_TRIES):
            if not history:
                raise ValueError(f'{self.path} has no completed epoch yet, so no parameters')
            with contextlib.ExitStack() as opened:
                try:
                    files = {kind: self._open_checked(opened, len(history), kind, history[-1])
                             for kind in kinds}
                except ValueError:
                    latest = self.history()
                    if latest == history:
                        raise
                    history = latest  # the writer moved on: read its new last epoch
                    continue
                yield len(history), files
                return
        raise ValueError(f'{self.path} committed another epoch each of the {_READ_TRIES} times '
                         'its checkpoint was read; try again')

    def _open_checked(self, opened: contextlib.ExitStack, epoch: int, kind: str,
                      line: Dict[str, Any]) -> str:
        """Open the checkpoint file of ``epoch`` (closed with ``opened``), check it against its
        metrics line, and return a path that reads the opened file (``/dev/fd/N``)."""
        path = self.checkpoint(epoch)[kind]
        try:
            f = opened.enter_context(open(path, 'rb'))
        except FileNotFoundError:
            raise ValueError(f'checkpoint {path} is missing '
                             f'({METRICS} records epoch {epoch} as done)') from None
        fd_path = f'/dev/fd/{f.fileno()}'
        expected = (line.get('checkpoint') or {}).get(kind)
        if expected is None:  # save_epoch always records it: the line was edited
            raise ValueError(f'{METRICS} records no checksum of the {kind} checkpoint of '
                             f'epoch {epoch}, so {path} is not loaded')
        if file_digest(fd_path, 'sha256') != expected:
            raise ValueError(f'checkpoint {path} is not the file epoch {epoch} saved (its '
                             f'SHA-256 differs from the one in {METRICS}): it was corrupted '
                             'or replaced, and is not loaded')
        f.seek(0)  # where /dev/fd/N shares the offset (macOS), the loader reads from the start
        return fd_path
