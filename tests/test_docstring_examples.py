"""Every example in a docstring runs, so the documentation cannot drift from the code.

Two kinds are collected from every module of `tf_smelu` (the API reference
shows the same docstrings): `>>>` examples run as doctests (ellipsis and
whitespace-insensitive), and a fenced `python` block inside a Google-style
`Examples:` section (the lines indented under the heading) runs as a script
in a fresh namespace. The fenced ones train small models, so they are `slow`
(CI runs them).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_smelu

_HEADING = re.compile(r"^(\s*)Examples?:\s*$")
_FENCED = re.compile(r"^```python\n(.*?)\n```", re.DOTALL | re.MULTILINE)


def _fenced_blocks(doc: str) -> list[str]:
    """The fenced `python` blocks of a docstring's `Examples:` sections, dedented."""
    blocks = []
    lines = doc.splitlines()
    for number, line in enumerate(lines):
        heading = _HEADING.match(line)
        if not heading:
            continue
        section = []
        for following in lines[number + 1:]:
            indent = len(following) - len(following.lstrip())
            if following.strip() and indent <= len(heading.group(1)):
                break  # the next section or paragraph
            section.append(following)
        blocks += _FENCED.findall(textwrap.dedent("\n".join(section)))
    return blocks


def _modules() -> list:
    names = sorted(info.name for info in pkgutil.walk_packages(tf_smelu.__path__, "tf_smelu."))
    # The worker and cluster-manager programs define flags at import: they are programs,
    # whose examples are their --help (tested by their own tests).
    programs = ("tf_smelu.training.distributed", "tf_smelu.training.cluster_managers")
    return [tf_smelu, *(importlib.import_module(name) for name in names if name not in programs)]


def _documented(module) -> list[tuple[str, str]]:
    """`(qualified name, docstring)` of the module and what it defines."""
    found = [(module.__name__, inspect.getdoc(module) or "")]
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) != module.__name__ or name.startswith("_"):
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            found.append((f"{module.__name__}.{name}", inspect.getdoc(value) or ""))
        if inspect.isclass(value):
            found += [(f"{module.__name__}.{name}.{member}", inspect.getdoc(attribute) or "")
                      for member, attribute in vars(value).items()
                      if not member.startswith("_") and inspect.isfunction(attribute)]
    return found


_MODULES = _modules()
_DOCTEST_MODULES = [m for m in _MODULES if any(">>>" in doc for _, doc in _documented(m))]
_FENCED_EXAMPLES = [(name, block) for m in _MODULES for name, doc in _documented(m)
                    for block in _fenced_blocks(doc)]


@pytest.mark.parametrize("module", _DOCTEST_MODULES, ids=lambda m: m.__name__)
def test_doctest_examples_run(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    # The names every example may assume, as in the README's snippets.
    globs = {**vars(module), "np": np, "tf": tf, "keras": keras, "tf_smelu": tf_smelu,
             "registry": tf_smelu.registry}
    for test in finder.find(module, module.__name__, globs=globs):
        if test.examples:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("name,block", _FENCED_EXAMPLES, ids=[n for n, _ in _FENCED_EXAMPLES])
def test_fenced_examples_run(name, block):
    exec(compile(block, f"<example of {name}>", "exec"), {"__name__": "__example__"})


def test_examples_are_found():
    # The collector itself can fail: the known examples must be among those it runs.
    names = {m.__name__ for m in _DOCTEST_MODULES}
    assert {"tf_smelu.activations", "tf_smelu.layers", "tf_smelu.metrics"} <= names
    fenced = {name for name, _ in _FENCED_EXAMPLES}
    assert "tf_smelu.reproducibility.study.ReplicaStudy" in fenced
    assert "tf_smelu.conversion.convert_activations" in fenced
    assert {"tf_smelu.experiment.advisor.recommend", "tf_smelu.serving.serve_without_package",
            "tf_smelu.reproducibility.callbacks.PredictionDifferenceCallback"} <= fenced
    assert _fenced_blocks("Does.\n\nExamples:\n    Run it:\n\n    ```python\n    x = 1\n    ```\n"
                          "\nArgs:\n    x: a number.") == ["x = 1"]
