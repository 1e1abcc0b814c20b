"""Remedies for prediction difference: transformations of "build, compile, train, predict".

Each remedy is one small module implementing `Remedy` (`base`): which seeded
models make one replica, what changes in the compile arguments, how the
members' predictions become the replica's. A `Recipe` combines an activation
with remedies, parsed from specs such as `"ensemble:2"`, `"ema:0.999"`,
`"label_smoothing:0.1"`, `"distill:0.5"`, `"anchor:0.5"`, `"codistill:0.5"`,
`"warm_start"` or `"smelu:1+ema:0.999"`;
`tf_smelu.reproducibility.ReplicaStudy.compare` trains and measures them.
"""

from tf_smelu.remedies.anchor import Anchor
from tf_smelu.remedies.base import Pull, Remedy
from tf_smelu.remedies.codistill import Codistill
from tf_smelu.remedies.distill import Distill
from tf_smelu.remedies.ema import Ema
from tf_smelu.remedies.ensemble import Ensemble
from tf_smelu.remedies.label_smoothing import LabelSmoothing
from tf_smelu.remedies.recipe import REMEDIES, Recipe
from tf_smelu.remedies.warm_start import WarmStart

__all__ = ["REMEDIES", "Anchor", "Codistill", "Distill", "Ema", "Ensemble", "LabelSmoothing",
           "Pull", "Recipe", "Remedy", "WarmStart"]
