"""What is trained: the data and the ranking model a `TrainingConfig` names.

The in-process harness, the worker program and the experiment's checks of
the workers' outputs all load data and build models here, so that they train
the same thing for the same configuration.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from tf_smelu.data import FeatureSpec, LoadedDataset, load_dataset
from tf_smelu.models import ActivationLike, build_model
from tf_smelu.training.config import TrainingConfig

ModelBuilder = Callable[..., keras.Model]
"""`builder(activation, embedding_seed=..., tower_seed=...)` -> a built model."""


def load_training_data(config: TrainingConfig) -> LoadedDataset:
    """The train and test splits and feature spec of `config`'s data."""
    return load_dataset(
        config.dataset,
        train_examples=config.train_examples,
        eval_examples=config.eval_examples,
        seed=config.seed,
        max_vocab_size=config.max_vocab_size,
    )


def model_builder(config: TrainingConfig, feature_spec: FeatureSpec) -> ModelBuilder:
    """Builds `config.model` for `feature_spec` with any activation and seeds.

    The tower widths `config.hidden_units` are the MLP's hidden layers, or
    the top MLP of DCN.
    """
    units_argument = "hidden_units" if config.model == "mlp" else "top_units"

    def build(
        activation: ActivationLike, embedding_seed: int | None, tower_seed: int | None
    ) -> keras.Model:
        return build_model(
            config.model,
            feature_spec,
            activation=activation,
            embedding_dim=config.embedding_dim,
            embedding_seed=embedding_seed,
            tower_seed=tower_seed,
            **{units_argument: config.hidden_units},
        )

    return build
