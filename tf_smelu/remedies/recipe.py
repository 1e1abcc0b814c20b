"""A recipe: an activation and remedies, parsed from `"smelu:1+ema:0.999"`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from tf_smelu.registry import Activation, activation_names
from tf_smelu.remedies.anchor import Anchor
from tf_smelu.remedies.base import TARGETS, CompileConfig, Pull, Remedy
from tf_smelu.remedies.codistill import Codistill
from tf_smelu.remedies.distill import Distill
from tf_smelu.remedies.ema import Ema
from tf_smelu.remedies.ensemble import Ensemble
from tf_smelu.remedies.label_smoothing import LabelSmoothing
from tf_smelu.remedies.warm_start import WarmStart

REMEDIES: dict[str, type[Remedy]] = {kind.name: kind for kind in (
    Ensemble, Ema, LabelSmoothing, Distill, Anchor, Codistill, WarmStart)}
"""Remedy name -> its class; what `parse` knows."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one row of a comparison trains: an activation (or the model's own) and remedies.

    Attributes:
        activation: The hidden activation, or None for the model's own (a
            study then uses its baseline activation).
        remedies: The remedies in spec order, at most one of each kind.
    """

    activation: Activation | None = None
    remedies: tuple[Remedy, ...] = ()

    def __str__(self) -> str:
        """The spec text, e.g. `smelu:1.0+ema:0.999`: `Recipe.parse` reads it back."""
        return "+".join([*([str(self.activation)] if self.activation else []),
                         *(str(remedy) for remedy in self.remedies)])

    @classmethod
    def parse(cls, text: str | Activation | Recipe) -> Recipe:
        """`"relu"`, `"ensemble:2"`, `"smelu:1+ema:0.999+label_smoothing:0.1"`, ...

        Args:
            text: Parts joined by `+`: at most one activation spec and remedy
                specs of different kinds (`REMEDIES`); an `Activation` or a
                `Recipe` is taken as it is.

        Returns:
            The recipe.

        Raises:
            ValueError: A part that is neither a remedy nor an activation, a
                remedy value out of range, two activations or a remedy twice.
        """
        if isinstance(text, Recipe):
            return text
        if isinstance(text, Activation):
            return cls(text)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"A remedy or activation spec must be a non-empty string, e.g. "
                             f"'smelu:1+ema:0.999'. Received: {text!r}")
        activations, remedies = [], []
        for part in text.split("+"):
            name, _, value = part.strip().partition(":")
            if not name:  # "smelu:1+", "+ema:0.9", "a++b"
                raise ValueError(f"A '+' in a spec must join two parts, e.g. 'smelu:1+ema:0.999'; "
                                 f"one part is empty. Received: {text!r}")
            if name in REMEDIES:
                remedies.append(REMEDIES[name].from_text(part.strip(), value if _ else None))
            elif name in activation_names():
                activations.append(Activation.parse(part))
            else:
                raise ValueError(f"Unknown remedy or activation {name!r} in {text!r}; remedies: "
                                 f"{', '.join(REMEDIES)}; activations: "
                                 f"{', '.join(activation_names())}. Received: {text!r}")
        kinds = [r.name for r in remedies]
        if len(activations) > 1 or len(set(kinds)) < len(kinds):
            raise ValueError(f"A spec combines one activation with remedies of different kinds "
                             f"(each at most once). Received: {text!r}")
        return cls(activations[0] if activations else None, tuple(remedies))

    def with_activation(self, activation: Activation | None) -> Recipe:
        """This recipe, with `activation` if it names none itself.

        Args:
            activation: The activation to use when the recipe has none (e.g.
                a study's baseline).

        Returns:
            This recipe if it names an activation, else a copy with `activation`.
        """
        return self if self.activation is not None else dataclasses.replace(self, activation=activation)

    @property
    def remedy_spec(self) -> str:
        """The remedies' spec, e.g. `"ema:0.999+ensemble:2"` (empty without remedies)."""
        return "+".join(str(r) for r in self.remedies)

    def label(self, activation_label: str) -> str:
        """`activation_label` followed by the remedies', e.g. `relu+ema(0.999)`.

        Args:
            activation_label: The label of the activation the row trains
                (`Activation.label`).

        Returns:
            The row's label.

        Examples:
            >>> recipe = Recipe.parse("smelu:1+ensemble:2")
            >>> recipe.label(recipe.activation.label)
            'smelu(β=1)+ensemble(K=2)'
        """
        return "+".join([activation_label, *(r.label for r in self.remedies)])

    def member_seeds(self, seed: int) -> list[int]:
        """The seeds of the models that make one replica of initialization seed `seed`.

        Args:
            seed: The replica's initialization seed.

        Returns:
            One seed per member (`[seed]` without an ensemble).
        """
        seeds = [seed]
        for remedy in self.remedies:
            seeds = [member for one in seeds for member in remedy.member_seeds(one)]
        return seeds

    def peer_seeds(self, seed: int) -> list[int]:
        """The seeds of the models one member of seed `seed` trains together (its own first).

        Args:
            seed: The member's seed.

        Returns:
            One seed per peer (`[seed]` without co-distillation).
        """
        seeds = [seed]
        for remedy in self.remedies:
            seeds = [peer for one in seeds for peer in remedy.peer_seeds(one)]
        return seeds

    def pulls(self) -> tuple[Pull, ...]:
        """Every remedy's loss terms towards other models' predictions.

        Returns:
            The terms, in remedy order (empty without pulling remedies).
        """
        return tuple(pull for remedy in self.remedies for pull in remedy.pulls())

    def start_from(self) -> str | None:
        """The trained model every member starts from, if a remedy names one.

        Returns:
            A name of `base.TARGETS`, or None.
        """
        return next((r.start_from() for r in self.remedies if r.start_from()), None)

    @property
    def targets(self) -> tuple[str, ...]:
        """The trained models (`base.TARGETS`) the remedies learn from or start from."""
        named = [pull.target for pull in self.pulls()] + [self.start_from()]
        return tuple(dict.fromkeys(t for t in named if t in TARGETS))

    @property
    def trains_together(self) -> bool:
        """Whether a member trains in one `fit` with its peers or with loss terms towards others."""
        return len(self.peer_seeds(0)) > 1 or bool(self.pulls())

    def compile(self, model: keras.Model) -> keras.Model:
        """`model` compiled again with every remedy's change to its compile arguments.

        Args:
            model: A compiled model (one member).

        Returns:
            `model` itself, recompiled in place when a remedy changes its
            compile arguments.

        Raises:
            ValueError: A remedy that cannot change this model's loss or
                optimizer, or compile arguments that cannot be serialized.
        """
        if all(type(r).compile_config is Remedy.compile_config for r in self.remedies):
            return model  # nothing to change: the user's compiled objects as they are
        model.compile_from_config(self.compile_config(model.get_compile_config()))
        return model

    def compile_config(self, config: CompileConfig) -> CompileConfig:
        """The compile arguments `config` with every remedy's change (checks them all).

        Args:
            config: The model's compile arguments (`model.get_compile_config()`).

        Returns:
            The changed arguments.

        Raises:
            ValueError: A remedy that cannot change this loss or optimizer.
        """
        for remedy in self.remedies:
            config = remedy.compile_config(config)
        return config

    def predict(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """One replica's probabilities from its members' (see `member_seeds`).

        Args:
            probabilities: The members' predicted probabilities.

        Returns:
            The replica's: the ensemble's mean, or the only member's.
        """
        if len(probabilities) > 1:
            for remedy in self.remedies:
                if len(remedy.member_seeds(0)) > 1:  # the remedy whose members these are
                    return remedy.predict(probabilities)
        [only] = probabilities
        return only
