"""vgg: a companion library to the VGG chapter of the Gluon deep-learning book."""
import os as _os
import sys as _sys

# MXNet's OpenMP runtime reads OMP_NUM_THREADS once, when libmxnet loads, and
# without it uses only half the cores (it assumes hyper-threading): on a
# 2-core machine that halves training speed.  Set it before MXNet is imported.
if 'OMP_NUM_THREADS' not in _os.environ:
    if 'mxnet' in _sys.modules:
        import warnings as _warnings
        _warnings.warn('mxnet was imported before vgg, so it uses only half of the CPU cores; '
                       'import vgg first or set OMP_NUM_THREADS', RuntimeWarning, stacklevel=2)
    _os.environ['OMP_NUM_THREADS'] = str(_os.cpu_count() or 1)

# Also before MXNet is imported: the numpy names MXNet 1.9.1 reads that newer numpy
# removed (Python 3.12 and 3.13; docs/python.md).
import vgg_mxnet_compat as _compat
_compat.apply()

from .config import RunConfig  # noqa: E402
from .data import (DataError, TEXT_LABELS, get_fashion_mnist_labels,  # noqa: E402
                   load_data_fashion_mnist)
from .devices import parse_ctx, try_all_gpus, try_gpu  # noqa: E402
from .export import export_onnx, export_symbol  # noqa: E402
from .experiment import Interrupted, OutOfMemory, fit, load_net  # noqa: E402
from .launcher import launch  # noqa: E402
from .model import (CONV_ARCHS, VGG11, VGG13, VGG16, VGG19, alexnet, build_net,  # noqa: E402
                    narrow, vgg, vgg_block)
from .plots import (LiveCurves, plot_confusion, plot_histories, plot_history,  # noqa: E402
                    show_predictions)
from .predict import (confusion_matrix, per_class_accuracy, predict_probabilities,  # noqa: E402
                      read_image)
from .runs import Run  # noqa: E402
from .summaries import Summary, measure_step, summary  # noqa: E402
from .training import evaluate_accuracy, train  # noqa: E402
from .transfer import from_model_zoo, init_from  # noqa: E402

__version__ = '0.1.0'

# The chapter's names (gluonbook's, for `import vgg as gb`), then this package's extras;
# README.md's "API" section lists both.  Everything else is in the submodules.
CHAPTER_API = ['vgg_block', 'vgg', 'try_gpu', 'try_all_gpus', 'load_data_fashion_mnist',
               'get_fashion_mnist_labels', 'train', 'evaluate_accuracy']
__all__ = CHAPTER_API + [
    'VGG11', 'VGG13', 'VGG16', 'VGG19', 'CONV_ARCHS', 'narrow', 'alexnet', 'build_net',
    'init_from', 'from_model_zoo',
    'RunConfig', 'fit', 'Interrupted', 'OutOfMemory', 'load_net', 'Run', 'parse_ctx',
    'TEXT_LABELS', 'DataError',
    'summary', 'Summary', 'measure_step', 'plot_history', 'plot_histories', 'LiveCurves',
    'show_predictions', 'plot_confusion',
    'predict_probabilities', 'read_image', 'confusion_matrix', 'per_class_accuracy',
    'export_symbol', 'export_onnx',
    'launch']
