"""Let MXNet 1.9.1 import and run with the numpy of Python 3.12 and 3.13.

MXNet 1.9.1 reads about twenty numpy names when it is imported that newer
numpy releases removed: ``np.bool`` (gone in numpy 1.24, the oldest numpy with
a Python 3.12 wheel), the constants and function aliases numpy 2.0 dropped,
the financial functions whose stubs numpy 2.0 dropped, and ``in1d`` and
``trapz`` (gone in numpy 2.4).  :func:`apply` puts back each of them that is
missing, and only those: with numpy 1.23 (Python 3.11) it changes nothing.

It must run before the first ``import mxnet``.  ``import vgg`` calls it, and
for programs that import ``mxnet`` (or ``gluonbook``) without ``vgg``,
installing this project (``pip install .`` or ``pip install -e .``) puts
``vgg_mxnet_compat.pth`` into site-packages: at interpreter start-up it calls
:func:`install_import_hook`, which costs one small module and applies the
shim only when ``mxnet`` is first imported.  Programs that never import
MXNet never import numpy because of it.

This is a top-level module, not part of the ``vgg`` package, because the
start-up hook must be importable without ``vgg/__init__.py``, which imports
MXNet.  docs/python.md has the per-version table and the start-up cost.
"""
from __future__ import annotations

import sys

__all__ = ['apply', 'install_import_hook', 'uninstall_import_hook', 'restored']

# The names apply() put back, in this process (empty where nothing was missing).
restored: list[str] = []

# Constants numpy 2.0 removed, all read by mxnet/numpy/utils.py at import
# (and np.Inf by gluon's estimator); their numpy 1.x values.
_CONSTANTS = {'PZERO': 0.0, 'NZERO': -0.0, 'PINF': float('inf'), 'NINF': float('-inf'),
              'NAN': float('nan'), 'NaN': float('nan'), 'Inf': float('inf')}

# Financial functions: removed in numpy 1.20, but numpy 1.x still answered the
# names with stubs that raise when called; numpy 2.0 dropped the stubs too.
# mxnet/numpy/fallback.py reads these six at import.
_FINANCIAL = ('mirr', 'npv', 'pmt', 'ppmt', 'pv', 'rate')


def _missing(module: object, name: str) -> bool:
    """Whether ``module.name`` raises AttributeError (without printing numpy's warnings)."""
    import warnings
    with warnings.catch_warnings():
        # numpy 1.2x answers some removed names with a DeprecationWarning (and
        # a value); numpy 2.x warns for some names it will reuse (np.object).
        warnings.simplefilter('ignore')
        try:
            getattr(module, name)
        except AttributeError:
            return True
    return False


def _restored(name: str, body, doc: str):
    """``body`` under numpy's old name: a new function object, never an alias."""
    # MXNet keys its __array_function__ table by the numpy function it overrides:
    # an alias (np.sometrue = np.any) would make MXNet's registration of
    # `sometrue` replace its entry for `any`.
    body.__name__ = body.__qualname__ = name
    body.__module__ = 'numpy'
    body.__doc__ = f'Restored by vgg_mxnet_compat (numpy removed it): {doc}'
    return body


def _financial_stub(name: str):
    def stub(*args, **kwargs):
        raise RuntimeError(f'numpy.{name} was removed in NumPy 1.20 (NEP 32); '
                           'the numpy_financial package has it')
    return _restored(name, stub, 'raises, as numpy 1.x did')


def _replacements(np) -> dict:
    """Every name :func:`apply` may set, with its value (for this numpy)."""
    values = {
        # The builtin, as before numpy 1.24 (numpy 2.0 brought np.bool back as
        # np.bool_, which then stays).
        'bool': bool,
        **_CONSTANTS,
        # Function aliases numpy 2.0 removed (in1d and trapz: numpy 2.4).
        'alltrue': _restored('alltrue', lambda *a, **k: np.all(*a, **k), 'np.all'),
        'sometrue': _restored('sometrue', lambda *a, **k: np.any(*a, **k), 'np.any'),
        'product': _restored('product', lambda *a, **k: np.prod(*a, **k), 'np.prod'),
        'round_': _restored('round_', lambda *a, **k: np.round(*a, **k), 'np.round'),
        'msort': _restored('msort', lambda a: np.sort(a, axis=0), 'np.sort(a, axis=0)'),
        'in1d': _restored('in1d', lambda ar1, ar2, *a, **k: np.isin(ar1, ar2, *a, **k).ravel(),
                          'np.isin(ar1, ar2).ravel()'),
        'trapz': _restored('trapz', lambda *a, **k: np.trapezoid(*a, **k), 'np.trapezoid'),
    }
    values.update((name, _financial_stub(name)) for name in _FINANCIAL)
    return values


def apply() -> list[str]:
    """Put back the numpy names MXNet 1.9.1 reads that this numpy lacks.

    Only missing names are set, so calling it again, or with a numpy that
    has them all (1.23 and older), changes nothing.

    Returns
    -------
    list of str
        The names set by this call (also appended to :data:`restored`).
    """
    import numpy as np
    values = _replacements(np)
    added = [name for name in values if _missing(np, name)]
    for name in added:
        setattr(np, name, values[name])
    restored.extend(added)
    return added


class _ApplyBeforeMXNet:
    """A meta-path finder that finds nothing: it runs :func:`apply` when ``mxnet`` is first
    imported.

    It removes itself on first use, so later imports pay nothing at all and
    earlier ones one string comparison each.
    """

    @classmethod
    def find_spec(cls, fullname: str, path=None, target=None) -> None:
        if fullname == 'mxnet':
            uninstall_import_hook()
            try:
                apply()
            except ImportError:
                pass  # no numpy: let MXNet's own import report it
        return None  # the normal finders import mxnet, now with the names in place


def install_import_hook() -> None:
    """Run :func:`apply` just before ``mxnet`` is first imported (vgg_mxnet_compat.pth calls it).

    Does nothing when ``mxnet`` is already imported or the hook is in place.
    """
    if 'mxnet' not in sys.modules and _ApplyBeforeMXNet not in sys.meta_path:
        sys.meta_path.insert(0, _ApplyBeforeMXNet)


def uninstall_import_hook() -> None:
    """Remove the hook of :func:`install_import_hook`, if it is in place."""
    try:
        sys.meta_path.remove(_ApplyBeforeMXNet)
    except ValueError:
        pass
