"""tf_smelu: smooth activations and reproducibility tooling for TensorFlow.

After `import tf_smelu`, `activation="smelu"`, `"generalized_smelu"` and
`"rescu"` work in any Keras layer (Keras 3, and tf-keras when installed), and
`tf_smelu.convert_activations(model, "smelu:0.2")` switches a Keras model's
hidden ReLUs to another activation (e.g. a trained ReLU model, to fine-tune).
"""

from tf_smelu import layers, metrics, registry
from tf_smelu.activations import generalized_smelu, rescu, smelu
from tf_smelu.conversion import convert_activations

__version__ = "0.1.0"

registry.register_all()

__all__ = [
    "convert_activations",
    "generalized_smelu",
    "layers",
    "metrics",
    "registry",
    "rescu",
    "smelu",
]
