"""Measure the prediction difference (PD) of your own model, trained your own way.

* `ReplicaStudy`: R replicas of your compiled model, each trained by its own
  `fit` with your arguments, differing only in the sources you switch on
  (initialization, data order, op nondeterminism); their held-out
  predictions become rows of `results.json` (accuracy next to PD with an
  interval), and `compare` measures the same for other hidden activations
  and for remedies (`tf_smelu.remedies`: ensembles, weight averaging, label
  smoothing), with their training and serving costs.
* `PredictionDifferenceCallback`: during one ordinary `fit`, the PD of the
  model being trained against a reference (a model, a saved `.keras` file
  or saved predictions), written into `logs` each epoch.
* `main_job`: the main job's `--trainer=keras`, every replica of every row
  trained by its model's own `fit` through a `ReplicaStudy` (registered as
  the `keras` row trainer when this package is imported).
"""

from tf_smelu.reproducibility import main_job  # noqa: F401  (registers the "keras" row trainer)
from tf_smelu.reproducibility.callbacks import PredictionDifferenceCallback
from tf_smelu.reproducibility.study import STUDY_SOURCES, ReplicaStudy

__all__ = ["STUDY_SOURCES", "PredictionDifferenceCallback", "ReplicaStudy"]
