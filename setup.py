import os
import re

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# One line that site.py runs at every start-up of the environment's Python: it
# makes `import mxnet` apply vgg_mxnet_compat first, also in programs that never
# import vgg.  Its name sorts after setuptools' __editable__.*.pth, whose finder
# an editable install needs to import vgg_mxnet_compat.
PTH_NAME = 'vgg_mxnet_compat.pth'
PTH_LINE = 'import vgg_mxnet_compat; vgg_mxnet_compat.install_import_hook()\n'


def read_version() -> str:
    """``vgg.__version__``, the one version number, from the text of vgg/__init__.py
    (importing vgg would import MXNet, which need not be installed yet)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vgg', '__init__.py')
    with open(path, encoding='utf-8') as f:
        return re.search(r"^__version__ = '([^']+)'$", f.read(), re.MULTILINE).group(1)


class BuildPyWithPth(build_py):
    """build_py that also writes PTH_NAME to the top of site-packages.

    A wheel installs build_lib's top level into site-packages.  An editable
    wheel (setuptools >= 64, PEP 660) leaves build_lib out, and its
    site-packages files are the unpacked wheel, which setuptools passes to the
    build as the install command's install_lib.
    """

    def _pth_path(self) -> str:
        if getattr(self, 'editable_mode', False):
            return os.path.join(self.get_finalized_command('install').install_lib, PTH_NAME)
        return os.path.join(self.build_lib, PTH_NAME)

    def run(self) -> None:
        super().run()
        path = self._pth_path()
        self.mkpath(os.path.dirname(path))
        with open(path, 'w', encoding='ascii') as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return super().get_outputs(include_bytecode) + [self._pth_path()]


setup(
    name='vgg',
    version=read_version(),
    description='Companion library to the VGG chapter of the Gluon (MXNet) deep-learning book',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['vgg', 'vgg.*']),
    # Top level, not vgg._compat: the start-up hook must import it without
    # vgg/__init__.py, which imports MXNet.
    py_modules=['vgg_mxnet_compat'],
    cmdclass={'build_py': BuildPyWithPth},
    python_requires='>=3.8',
    # No MXNet requirement here: the CPU wheel is `mxnet`, the GPU wheels are
    # `mxnet-cu1xx`, and pip cannot tell which one a user has.  requirements.txt
    # installs the CPU wheel; GPU users install their wheel instead.
    install_requires=[
        # Any numpy the running Python installs: vgg_mxnet_compat restores what MXNet
        # 1.9.1 reads that newer numpy removed.  requirements-base.txt pins one per Python.
        'numpy>=1.16',
        'matplotlib>=3.3',
        'tqdm>=4.60',
        'Pillow>=9.1',
    ],
    extras_require={
        'notebooks': ['nbclient>=0.7', 'nbformat>=5.7', 'ipykernel>=6', 'jupytext==1.19.6'],
        # MXNet 1.9.1's ONNX exporter imports onnx.mapping, which onnx 1.19 removed.
        'onnx': ['onnx>=1.13,<1.19', 'onnxruntime'],
        # gluonbook: the chapter's own code, which the tests and benchmarks compare against.
        'test': ['pytest>=7', 'gluonbook==0.8.10', 'nbclient>=0.7', 'nbformat>=5.7',
                 'nbconvert>=7', 'ipykernel>=6', 'jupytext==1.19.6', 'onnx>=1.13,<1.19',
                 'onnxruntime'],
    },
    entry_points={'console_scripts': ['vgg=vgg.cli:main']},
)
