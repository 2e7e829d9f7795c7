from setuptools import find_packages, setup

setup(
    name='vgg',
    version='0.1.0',
    description='Companion library to the VGG chapter of the Gluon (MXNet) deep-learning book',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['vgg', 'vgg.*']),
    python_requires='>=3.8',
    # No MXNet requirement here: the CPU wheel is `mxnet`, the GPU wheels are
    # `mxnet-cu1xx`, and pip cannot tell which one a user has.  requirements.txt
    # installs the CPU wheel; GPU users install their wheel instead.
    install_requires=[
        'numpy>=1.16,<1.24',  # MXNet 1.9.1 still uses np.bool, removed in numpy 1.24
        'gluonbook==0.8.10',
        'matplotlib>=3.3',
        'tqdm>=4.60',
        'Pillow>=9.1',
    ],
    extras_require={
        'notebooks': ['nbclient>=0.7', 'nbformat>=5.7', 'ipykernel>=6', 'jupytext==1.19.6'],
        # MXNet 1.9.1's ONNX exporter imports onnx.mapping, which onnx 1.19 removed.
        'onnx': ['onnx>=1.13,<1.19', 'onnxruntime'],
        'test': ['pytest>=7', 'nbclient>=0.7', 'nbformat>=5.7', 'nbconvert>=7', 'ipykernel>=6',
                 'jupytext==1.19.6', 'onnx>=1.13,<1.19', 'onnxruntime'],
    },
    entry_points={'console_scripts': ['vgg=vgg.cli:main']},
)
