"""tf_smelu: smooth activations and reproducibility tooling for TensorFlow.

After `import tf_smelu`, `activation="smelu"`, `"generalized_smelu"` and
`"rescu"` work in any Keras layer (Keras 3, and tf-keras when installed), and
`tf_smelu.convert_activations(model, "smelu:0.2")` switches a Keras model's
hidden ReLUs to another activation (e.g. a trained ReLU model, to fine-tune).
`tf_smelu.ReplicaStudy` measures the prediction difference of your own model
trained by its own `fit`, and `tf_smelu.PredictionDifferenceCallback` logs it
against a reference model during one `fit` (`tf_smelu.reproducibility`).
"""

import importlib

from tf_smelu import layers, metrics, registry
from tf_smelu.activations import generalized_smelu, rescu, smelu
from tf_smelu.conversion import convert_activations

__version__ = "0.1.0"

registry.register_all()

# Loaded on first use: the study imports the experiment harness and its trainers,
# which `import tf_smelu` (for the activations alone) should not pay for.
_LAZY = {
    "reproducibility": "tf_smelu.reproducibility",
    "ReplicaStudy": "tf_smelu.reproducibility",
    "PredictionDifferenceCallback": "tf_smelu.reproducibility",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tf_smelu' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "reproducibility" else getattr(module, name)


__all__ = [
    "PredictionDifferenceCallback",
    "ReplicaStudy",
    "convert_activations",
    "generalized_smelu",
    "layers",
    "metrics",
    "registry",
    "reproducibility",
    "rescu",
    "smelu",
]
