"""Checks, file writes, MXNet error text and facts that every module of the package shares.

This module imports nothing from ``vgg``, so every other module may import it
(``config`` imports ``model``, which therefore cannot import ``config``).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from typing import Any, Callable, Optional, Tuple, Type, Union

import mxnet as mx
import numpy as np

# MXNet hands settings such as the learning rate to its kernels as float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
Number = Union[int, float]
# Fashion-MNIST's classes: the labels of the data and the outputs of a network by default.
NUM_CLASSES = 10
# The suffix of atomic_write's temporary files, which a run's writer sweeps up after a crash.
TEMP_SUFFIX = '.tmp'
# What MXNet says when an allocation fails (its CPU storage, mshadow's AlignedMallocPitch,
# cudaMalloc, C++'s bad_alloc).
_ALLOCATION_FAILED = re.compile(r'failed to allocate|memory allocation failed|malloc\w* failed|'
                                r'bad_alloc|out of memory', re.IGNORECASE)


def check_positive(name: str, value: Any, kind: Union[Type, Tuple[Type, ...]] = (int, float)
                   ) -> Number:
    """Return ``value`` if it is a positive number of ``kind`` within float32's range.

    The one validator of counts and sizes used by the library and the command line.

    Parameters
    ----------
    name : str
        What the value is, for the message.
    value : object
        The value to check; a bool is never a number here.
    kind : type or tuple of types
        The accepted types; ``int`` alone makes the message say "an integer".

    Returns
    -------
    int or float
        ``value`` itself.

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


def mxnet_message(err: BaseException) -> str:
    """An MXNet error in one line: its last, without the C++ trace, time and source location."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    last = re.sub(r'^MXNetError: ', '', last)
    return re.sub(r'\[[\d:]+\] \S+:\d+: ', '', last)


def allocation_failure(err: BaseException) -> Optional[str]:
    """What ``err`` says if it is a failed memory allocation, else None.

    numpy raises MemoryError; MXNet raises MXNetError ('Failed to allocate CPU
    Memory', 'AlignedMallocPitch failed', 'cudaMalloc retry failed: out of memory'),
    often at the next point that waits for its engine, far from the allocation.
    """
    if isinstance(err, MemoryError):
        return str(err) or 'MemoryError'
    if isinstance(err, mx.base.MXNetError) and _ALLOCATION_FAILED.search(str(err)):
        return mxnet_message(err)
    return None


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

    Raises
    ------
    OSError
        One line naming ``path``, the reason and the free space; ``path`` is unchanged.
    MemoryError
        When MXNet's engine reports a failed allocation while ``write`` waits for it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}{TEMP_SUFFIX}')
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, mx.base.MXNetError) as err:
        if allocation_failure(err):  # the engine's failure surfaced here: not the disk's
            raise MemoryError(allocation_failure(err)) from None
        # MXNet reports a full disk as its own error, with a C++ trace: one line instead.
        reason = getattr(err, 'strerror', None) or mxnet_message(err)
        raise OSError(f'cannot write {path}: {reason} ({_free_space(directory)}); the file '
                      'it would replace is unchanged') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    # The rename itself is durable only once the folder's entry is on disk.
    _fsync_dir(directory)


def _free_space(directory: str) -> str:
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return 'free space unknown'
    return f'{usage.free / 1e6:.1f} MB free in {directory}'


def write_text(path: str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
    atomic_write(path, write)


def in_jupyter() -> bool:
    """Whether this code runs in a Jupyter kernel (live, or executed headless by nbclient)."""
    zmqshell = sys.modules.get('ipykernel.zmqshell')  # loaded by every Jupyter kernel
    if zmqshell is None:
        return False
    # Subclasses count too (Google Colab's shell is one).
    return isinstance(sys.modules['IPython'].get_ipython(), zmqshell.ZMQInteractiveShell)


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest of a file (md5, sha1, sha256, ...), read in 1 MB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
