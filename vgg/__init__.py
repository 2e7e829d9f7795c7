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

from .data import (DataError, TEXT_LABELS, get_fashion_mnist_labels,  # noqa: E402
                   load_data_fashion_mnist)
from .distributed import Worker, join, make_trainer, train_worker  # noqa: E402
from .export import export_onnx, export_symbol  # noqa: E402
from .devices import parse_ctx, try_all_gpus, try_gpu  # noqa: E402
from .launcher import launch, plan  # noqa: E402
from .model import (CONV_ARCHS, VGG11, VGG13, VGG16, VGG19, alexnet, build_net,  # noqa: E402
                    conv_arch_by_name, narrow, vgg, vgg_block)
from .predict import confusion_matrix, predict_probabilities, read_image  # noqa: E402
from .plots import plot_confusion, plot_history, show_predictions  # noqa: E402
from .runs import Run, RunConfig, atomic_write  # noqa: E402
from .summary import LayerRow, Summary, measure_step, summary  # noqa: E402
from .training import evaluate_accuracy, train  # noqa: E402

__version__ = '0.1.0'

__all__ = ['DataError', 'TEXT_LABELS', 'get_fashion_mnist_labels', 'load_data_fashion_mnist',
           'export_onnx', 'export_symbol', 'parse_ctx', 'try_all_gpus', 'try_gpu',
           'CONV_ARCHS', 'VGG11', 'VGG13', 'VGG16', 'VGG19', 'alexnet', 'conv_arch_by_name',
           'narrow', 'vgg', 'vgg_block', 'confusion_matrix', 'plot_confusion',
           'predict_probabilities', 'read_image', 'plot_history', 'show_predictions', 'Run',
           'RunConfig', 'atomic_write', 'build_net', 'LayerRow', 'Summary', 'measure_step',
           'summary', 'evaluate_accuracy', 'train', 'Worker', 'join', 'make_trainer',
           'train_worker', 'launch', 'plan']
