"""The package's public names: the chapter's (as gluonbook spells them) plus the README's extras."""
import glob
import importlib
import inspect
import os
import re

import gluonbook
import pytest

import vgg
from helpers import REPO


def readme_api_names():
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    section = text.split('\n## API\n', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in section.splitlines() if line.startswith('| ') and '`' in line]
    return [name for row in rows for name in re.findall(r'`(\w+)`', row.split(' | ')[-1])]


def test_all_is_what_the_readme_lists_and_every_name_exists():
    listed = readme_api_names()
    assert sorted(listed) == sorted(vgg.__all__)
    assert len(set(vgg.__all__)) == len(vgg.__all__)
    for name in vgg.__all__:
        assert getattr(vgg, name) is not None, name


@pytest.mark.parametrize('name', vgg.CHAPTER_API[2:])  # vgg_block and vgg are the chapter's own
def test_chapter_names_take_gluonbooks_arguments(name):
    ours = list(inspect.signature(getattr(vgg, name)).parameters.values())
    theirs = list(inspect.signature(getattr(gluonbook, name)).parameters.values())
    # Same names in the same order, so positional and keyword calls of the chapter both work;
    # anything we add comes after, with a default or keyword-only.
    assert [p.name for p in ours[:len(theirs)]] == [p.name for p in theirs]
    assert all(p.default is not p.empty or p.kind == p.KEYWORD_ONLY for p in ours[len(theirs):])


def test_every_module_of_the_package_is_in_the_readmes_module_table():
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    table = text.split('\n## What the package holds\n', 1)[1].split('\n## ', 1)[0]
    listed = re.findall(r'^\| `(vgg/\w+\.py)` \|', table, re.M)
    modules = sorted(os.path.relpath(path, REPO)
                     for path in glob.glob(os.path.join(REPO, 'vgg', '*.py')))
    assert sorted(listed) == modules


def test_no_public_name_hides_a_submodule():
    # A function named like its module (`from .fit import fit`) makes `import vgg.fit as m` give
    # the function, so the module's other names (its exceptions) cannot be reached.
    submodules = {os.path.basename(path)[:-3]
                  for path in glob.glob(os.path.join(REPO, 'vgg', '*.py'))}
    assert not submodules & set(vgg.__all__)
    for name in submodules - {'__init__', '__main__'}:
        assert inspect.ismodule(importlib.import_module(f'vgg.{name}')), name
