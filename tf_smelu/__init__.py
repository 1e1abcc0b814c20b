"""tf_smelu: smooth activations and reproducibility tooling for TensorFlow.

After `import tf_smelu`, `activation="smelu"`, `"generalized_smelu"` and
`"rescu"` work in any Keras layer (Keras 3, and tf-keras when installed).
"""

from tf_smelu import layers, metrics, registry
from tf_smelu.activations import generalized_smelu, rescu, smelu

__version__ = "0.1.0"

registry.register_all()

__all__ = ["smelu", "generalized_smelu", "rescu", "layers", "metrics", "registry"]
