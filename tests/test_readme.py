"""The README's Python snippets run as written (in order, one namespace)."""

import os
import re

import pytest


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# Snippets that need the reader's own model and data are shown, not run.
NEEDS_USER_CODE = ("model_fn,",)


def _python_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_snippets():
    assert len(_python_blocks()) >= 5


@pytest.mark.slow  # trains the README's models: kept out of the fast tier
def test_readme_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    ran = 0
    for block in _python_blocks():
        if any(marker in block for marker in NEEDS_USER_CODE):
            continue
        exec(compile(block.replace("/tmp/", f"{tmp_path}/"), README, "exec"), namespace)
        ran += 1
    assert ran >= 5
    # Spot-check the values the README prints in comments.
    import numpy as np
    import tf_smelu

    np.testing.assert_allclose(
        tf_smelu.smelu(namespace["x"], beta=1.0), [0, 0.0625, 0.25, 0.5625, 2], rtol=1e-6
    )
    np.testing.assert_allclose(
        tf_smelu.rescu(namespace["x"], beta=1.0, order=2),
        [0, 0.0208333, 0.1666667, 0.5208333, 2], rtol=1e-5,
    )
