"""Rows one after another in one process: a finished row's graphs and models do not stay behind.

Every SmeLU replica's traced train and predict functions used to stay in
memory for the rest of the main job: `tf.custom_gradient` registers each
graph's gradient function in TensorFlow's global registry, which holds the
graph (about 24 MB per replica of the main job's model; measured by
`benchmarks/row_memory.py`). These tests count what Python holds (live
graphs, registry entries, models), not memory or time.
"""

from __future__ import annotations

import gc

import pytest
from test_remedy_costs_and_caching import RunLog, _tiny_config


def _held() -> dict[str, int]:
    """Live TensorFlow graphs and Keras models, and registered custom gradients."""
    import keras
    import tensorflow as tf

    from tf_smelu.training.replicas import _gradient_registry

    gc.collect()
    objects = gc.get_objects()
    return {"graphs": sum(isinstance(o, tf.Graph) for o in objects),
            "models": sum(isinstance(o, keras.Model) for o in objects),
            "custom_gradients": sum(name.startswith("CustomGradient")
                                    for name in _gradient_registry())}


def _traced_gradient(activation):
    """A `tf.function` differentiating `activation`, traced once."""
    import tensorflow as tf

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = activation(x)
        return tape.gradient(y, x)

    gradient(tf.constant([-1.0, 0.25, 2.0]))
    return gradient


def test_released_custom_gradients_lets_the_activations_graphs_go():
    import weakref

    import keras
    import numpy as np
    import tensorflow as tf

    import tf_smelu
    from tf_smelu.training.replicas import _gradient_registry, released_custom_gradients

    @tf.custom_gradient
    def own(x):  # a user's custom gradient: kept
        return tf.identity(x), lambda upstream: 2.0 * upstream

    before = set(_gradient_registry())
    with released_custom_gradients():
        smelu = _traced_gradient(lambda x: tf_smelu.smelu(x, beta=1.0))
        _traced_gradient(keras.activations.swish)  # TensorFlow's, a custom gradient too
        yours = _traced_gradient(own)
        graph = weakref.ref(smelu.get_concrete_function(tf.constant([0.0, 0.0, 0.0])).graph)
        assert len(set(_gradient_registry()) - before) >= 3  # SmeLU's, Swish's, the user's
        # Inside the block the gradients are there to build.
        np.testing.assert_allclose(smelu(tf.constant([-2.0, 0.0, 2.0])), [0.0, 0.5, 1.0])
    new = set(_gradient_registry()) - before
    assert len(new) == 1, new  # the user's, not the activations'
    del smelu
    gc.collect()
    assert graph() is None  # nothing holds the traced graph once its function is gone
    np.testing.assert_allclose(yours(tf.constant([1.0, 1.0, 1.0])), [2.0, 2.0, 2.0])
    # Functions traced later register (and differentiate) as before.
    again = _traced_gradient(lambda x: tf_smelu.smelu(x, beta=1.0))
    np.testing.assert_allclose(again(tf.constant([-2.0, 0.0, 2.0])), [0.0, 0.5, 1.0])


@pytest.mark.slow  # two rows of a few steps: seconds
@pytest.mark.parametrize("trainer, remedies", [("builtin", []), ("keras", []),
                                               ("keras", ["ensemble:2"])])
def test_finished_rows_leave_no_graphs_or_models_behind(trainer, remedies):
    """Row 2 ends holding what row 1 ended with, whatever the rows trained."""
    import tf_smelu.reproducibility  # noqa: F401  (registers the keras trainer)
    from tf_smelu.experiment.runner import TRAINERS
    from tf_smelu.remedies import Recipe

    config = _tiny_config(trainer=trainer, remedies=remedies)
    rows = TRAINERS[trainer](config, RunLog())
    specs = ["smelu:1", "rescu:0.5"]  # SmeLU's and RESCU's custom gradients
    if remedies:
        specs = [f"{spec}+{remedies[0]}" for spec in specs]
    held = []
    for spec in specs:
        rows.row(Recipe.parse(spec), ("tower_init",), 2)
        held.append(_held())
    assert held[-1] == held[0], held


@pytest.mark.slow
def test_a_smooth_teacher_trained_for_an_earlier_row_teaches_the_next_bit_for_bit():
    """Its training graphs released after its row, the cached SmeLU teacher still trains a
    later row's replicas (its pull traced anew), as a fresh trainer's own teacher does."""
    import numpy as np

    import tf_smelu.reproducibility  # noqa: F401  (registers the keras trainer)
    from tf_smelu.experiment.runner import TRAINERS
    from tf_smelu.remedies import Recipe

    config = _tiny_config(trainer="keras", remedies=["smelu:1+distill:0.5", "smelu:1+distill:1"])
    kept = {}

    def row(trainer, spec):
        return trainer.row(Recipe.parse(spec), ("tower_init",), 2,
                           on_predictions=lambda p: kept.__setitem__(spec, p))

    trainer = TRAINERS["keras"](config, RunLog())
    row(trainer, "smelu:1+distill:0.5")
    held = _held()
    second = row(trainer, "smelu:1+distill:1")
    assert second["setup_reused"] == ["teacher"]
    assert _held() == held  # the second row's graphs went too; the teacher stays
    cached = kept.pop("smelu:1+distill:1")
    row(TRAINERS["keras"](config, RunLog()), "smelu:1+distill:1")
    np.testing.assert_array_equal(kept["smelu:1+distill:1"], cached)
