"""Activation strings for Keras 3 and tf-keras.

After `import tf_smelu`, `activation="smelu"` (and `"generalized_smelu"`,
`"rescu"`) works in every Keras layer that takes an activation, and
`keras.activations.get/serialize/deserialize` round-trip the functions.

Keras 3's `activations.get(name)` looks only in a private dict
(`keras.src.activations.ALL_OBJECTS_DICT`), so the names go there, and the
functions are registered as serializable so that saved models find them again
(`tests/test_registry.py` guards the private API). tf-keras looks names up in
its global custom objects.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Dict

import keras

from tf_smelu import activations

PACKAGE = "tf_smelu"

ACTIVATIONS: Dict[str, Callable] = {
    "smelu": activations.smelu,
    "generalized_smelu": activations.generalized_smelu,
    "rescu": activations.rescu,
}


def register_keras() -> None:
    """Makes the activation names known to Keras 3 (idempotent)."""
    from keras.src import activations as keras_activations

    for name, fn in ACTIVATIONS.items():
        keras.saving.register_keras_serializable(package=PACKAGE, name=name)(fn)
        keras_activations.ALL_OBJECTS_DICT[name] = fn


def register_tf_keras() -> bool:
    """Makes the activation names known to tf-keras, if it is installed.

    Returns:
        True when tf-keras was found and the names were registered.
    """
    if importlib.util.find_spec("tf_keras") is None:
        return False
    import tf_keras

    tf_keras.utils.get_custom_objects().update(ACTIVATIONS)
    return True


def register_all() -> None:
    """Registers the activation names with every Keras that is installed."""
    register_keras()
    register_tf_keras()
