"""vgg_mxnet_compat: MXNet 1.9.1 with the numpy of Python 3.12 and 3.13 (docs/python.md).

The restored names are checked against what replaced them; a fresh interpreter
checks the start-up hook of vgg_mxnet_compat.pth: ``import mxnet`` without
``import vgg`` works, restores exactly the names this numpy lacks, and leaves
MXNet's table of numpy overrides as it is with numpy 1.23 (``np.any``'s entry
is MXNet's ``any``, not ``sometrue``).  Not marked slow, though it starts one
Python: it is the test that matters most on 3.12 and 3.13, where CI runs only
the quick suite.
"""
import glob
import json
import os
import subprocess
import sys
import sysconfig
import warnings

import numpy as np
import pytest

import vgg  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)
import vgg_mxnet_compat
from vgg_mxnet_compat import _replacements

PTH = 'vgg_mxnet_compat.pth'
# Restored names that MXNet registers in its table of numpy overrides, with the names
# they stand for: an alias would have made the first registration lose its entry.
PAIRS = {'sometrue': 'any', 'round_': 'round', 'product': 'prod'}


def test_restored_functions_compute_what_replaced_them():
    values = _replacements(np)
    a = np.array([[3, 1], [2, 0]])
    assert values['alltrue'](a) == np.all(a) and values['sometrue'](a) == np.any(a)
    assert values['product'](a, axis=0).tolist() == np.prod(a, axis=0).tolist()
    assert values['round_'](np.array([1.26]), 1).tolist() == [1.3]
    assert values['msort'](a).tolist() == np.sort(a, axis=0).tolist()
    assert values['in1d'](a, [0, 3]).tolist() == [True, False, False, True]
    assert values['in1d'](a, [0, 3], invert=True).tolist() == [False, True, True, False]
    if hasattr(np, 'trapezoid'):  # numpy 2.0 and later, where trapz may be missing
        assert values['trapz']([1.0, 2.0, 3.0], dx=2.0) == np.trapezoid([1.0, 2.0, 3.0], dx=2.0)
    with pytest.raises(RuntimeError, match='numpy_financial'):
        values['npv'](0.1, [1.0, 2.0])


def test_restored_functions_are_new_objects_named_as_numpy_named_them():
    namespace = vars(np)
    for name, value in _replacements(np).items():
        if callable(value) and value is not bool:
            assert value.__name__ == name
            assert all(value is not other for other in namespace.values()), name
    for name in vgg_mxnet_compat.restored:  # and in numpy, each function under its own name only
        if callable(namespace[name]) and namespace[name] is not bool:
            assert [n for n, v in namespace.items() if v is namespace[name]] == [name]


def test_apply_sets_only_missing_names_and_only_once():
    assert vgg_mxnet_compat.apply() == []  # vgg's import applied it already
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # numpy 1.x warns for some of its own old names
        for name, value in _replacements(np).items():
            present = getattr(np, name)  # AttributeError if MXNet would still miss it
            if callable(value) and value is not bool:
                ours = 'vgg_mxnet_compat' in (present.__doc__ or '')
                assert ours == (name in vgg_mxnet_compat.restored), name


def test_installing_vgg_installs_the_start_up_hook():
    site_packages = sysconfig.get_path('purelib')
    if not glob.glob(os.path.join(site_packages, 'vgg-*.dist-info')):
        pytest.skip('vgg is not installed here with pip, so no .pth file either')
    # At the top of site-packages, for pip install . and pip install -e . alike.
    with open(os.path.join(site_packages, PTH), encoding='ascii') as f:
        assert f.read() == 'import vgg_mxnet_compat; vgg_mxnet_compat.install_import_hook()\n'


# Run in a fresh interpreter, from an empty folder, as a reader's own script would be.
PROBE = r'''
import json, os, sys
import vgg_mxnet_compat as compat
at_start = {'numpy': 'numpy' in sys.modules, 'hooked': compat._ApplyBeforeMXNet in sys.meta_path}
import numpy as np
missing = [name for name in compat._replacements(np) if compat._missing(np, name)]
import mxnet as mx
from mxnet.numpy_dispatch_protocol import _NUMPY_ARRAY_FUNCTION_DICT as table
pairs = json.loads(sys.argv[1])
print(json.dumps({
    **at_start, 'missing': missing, 'restored': compat.restored,
    'hook_left': compat._ApplyBeforeMXNet in sys.meta_path,
    'vgg': 'vgg' in sys.modules, 'omp': os.environ.get('OMP_NUM_THREADS'),
    # Per pair: whether numpy itself aliases them (np.round is np.round_ in numpy
    # 1.23), and the name of MXNet's function in the table entry of each.
    'pairs': {old: [getattr(np, old) is getattr(np, new),
                    table[getattr(np, old)].__name__, table[getattr(np, new)].__name__]
              for old, new in pairs.items()},
    'sum': float(mx.nd.ones((2, 3)).sum().asscalar()),
}))
'''


def test_import_mxnet_first_works_through_the_start_up_hook(tmp_path):
    if not any(os.path.isfile(os.path.join(p, PTH)) for p in sys.path if p):
        pytest.skip(f'{PTH} is not in site-packages (vgg not installed with pip)')
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    result = subprocess.run([sys.executable, '-c', PROBE, json.dumps(PAIRS)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    # At start-up: the hook waits, numpy is not imported for it.
    assert probe['hooked'] and not probe['numpy']
    # On `import mxnet`: exactly the missing names restored, then the hook is gone.
    assert probe['restored'] == probe['missing']
    assert not probe['hook_left']
    # Neither vgg nor its OMP_NUM_THREADS: the chapter's own code keeps MXNet's defaults.
    assert not probe['vgg'] and probe['omp'] is None
    # Each name keeps its own entry in MXNet's table, unless numpy itself made
    # the two one function (then it is so with numpy 1.23 too, without the shim).
    for old, (aliased, old_entry, new_entry) in probe['pairs'].items():
        assert aliased or (old_entry, new_entry) == (old, PAIRS[old]), old
    assert probe['sum'] == 6.0
