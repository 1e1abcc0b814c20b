"""`PredictionDifferenceCallback`: PD against a reference model during one `fit`."""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tf_smelu.reproducibility import outputs as outputs_lib

Reference = keras.Model | str | os.PathLike | np.ndarray | Mapping | list


class PredictionDifferenceCallback(keras.callbacks.Callback):
    """Logs, every epoch, how much the model being trained disagrees with a reference.

    At the end of every epoch the callback predicts the held-out features
    `x` with the model being trained and writes its prediction difference
    (`tf_smelu.metrics`) to the reference's predictions of the same `x`
    into `logs`: `<prefix>abs_pd` and `<prefix>rel_pd` for a binary output,
    `<prefix>top1_pd` and `<prefix>l1_pd` for a multi-class (`[N, K]`) one;
    a model with several outputs gets `<prefix><output>_<metric>` per
    output. Anything in `logs` reaches `History`, and `CSVLogger` and
    `TensorBoard` when they come after this callback in `callbacks`.

    The reference is typically the model in production, and the PD is the
    churn a release of the new model would cause.

    Examples:
        ```python
        import keras
        import numpy as np
        from tf_smelu.reproducibility import PredictionDifferenceCallback

        rng = np.random.default_rng(0)
        x = rng.normal(size=(2000, 8)).astype("float32")
        y = (x[:, 0] > 0).astype("float32")

        def build():
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu"),
                                      keras.layers.Dense(1, "sigmoid")])
            model.compile("adam", "binary_crossentropy")
            return model

        production = build()
        production.fit(x[:1500], y[:1500], epochs=1, verbose=0)
        churn = PredictionDifferenceCallback(production, x[1500:])
        history = build().fit(x[:1500], y[:1500], epochs=2, verbose=0, callbacks=[churn])
        print(history.history["churn_rel_pd"])  # one relative PD per epoch
        ```

    Args:
        reference: What to compare with: a `keras.Model`, the path of a
            saved `.keras` model, or its saved predictions of `x` as
            probabilities (an array, a list or dict of arrays per output,
            or the path of a `.npy` file).
        x: Held-out features, anything `model.predict` takes (arrays, a dict
            per input, or a batched `tf.data.Dataset` that gives the same
            order every time).
        prefix: Prepended to the names written into `logs`.
        from_logits: Whether the models output logits (one bool, or one per
            output name); `None` reads it from each model's compiled loss.
        batch_size: Batch size of the predictions (ignored for a dataset).

    Raises:
        ValueError: In `on_train_begin`, before the first step: a reference
            that cannot be loaded, a reference model that cannot predict `x`
            (its inputs differ from the model's), or reference predictions
            whose outputs or shapes differ from the model's predictions of `x`
            or that are NaN or infinite.
    """

    def __init__(self, reference: Reference, x: object, *, prefix: str = "churn_",
                 from_logits: bool | Mapping[str, bool] | None = None, batch_size: int = 1024):
        super().__init__()
        self.reference = reference
        self.x = x
        self.prefix = prefix
        self.from_logits = from_logits
        self.batch_size = batch_size
        self._reference: outputs_lib.Outputs | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Predicts the held-out data with the reference and checks it against the model.

        Runs before the first step, so that a reference that cannot be
        compared stops training at once.

        Args:
            logs: Keras' logs (unused).

        Raises:
            ValueError: if the reference cannot be loaded or predict `x`,
                its predictions are not all finite, or their outputs or
                shapes differ from the model's.
        """
        reference = self._reference_probabilities()
        for name, values in reference.items():
            if not np.isfinite(values).all():  # a PD against NaN is NaN: refuse before step 1
                raise ValueError(
                    f"The reference's predictions of output {name!r} are not all finite numbers. "
                    f"Received: {int(np.sum(~np.isfinite(values)))} of {values.size} values NaN "
                    "or infinite")
        current = self._probabilities(self.model, "the model being trained")
        shapes = {name: p.shape for name, p in current.items()}
        reference_shapes = {name: p.shape for name, p in reference.items()}
        if shapes != reference_shapes:
            raise ValueError(
                "The reference's predictions of the held-out data do not match the model's "
                f"(outputs and shapes). Received: reference {reference_shapes}, model {shapes}"
            )
        self._reference = reference

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Writes the PD of the model against the reference into `logs`.

        Args:
            epoch: The epoch that ended (unused).
            logs: Keras' logs of the epoch, which receive `<prefix><metric>`
                (with several outputs, `<prefix><output>_<metric>`) for
                `abs_pd` and `rel_pd` (binary outputs) or `top1_pd` and
                `l1_pd` (class probabilities); nothing is written when Keras
                passes no logs.
        """
        if logs is None:
            return
        current = self._probabilities(self.model, "the model being trained")
        several = len(current) > 1
        for name, probabilities in current.items():
            differences = outputs_lib.prediction_differences(probabilities, self._reference[name])
            for metric, value in differences.items():
                logs[f"{self.prefix}{name + '_' if several else ''}{metric}"] = value

    def _probabilities(self, model: keras.Model, what: str,
                       predicted: object = None) -> outputs_lib.Outputs:
        return outputs_lib.model_probabilities(model, self.x, self.from_logits, self.batch_size,
                                               what, predicted)

    def _reference_probabilities(self) -> outputs_lib.Outputs:
        reference = self.reference
        if isinstance(reference, (str, os.PathLike)):
            reference = _load(os.fspath(reference))
        if isinstance(reference, keras.Model):
            predicted = outputs_lib.predict(reference, self.x, self.batch_size,
                                            f"The reference model {reference.name!r}")
            outputs = self._probabilities(reference, f"reference model {reference.name!r}",
                                          predicted)
            # By position under the trained model's names: an unnamed output's auto name
            # ("dense_7") differs between two builds of one model.
            return dict(zip(outputs_lib.output_names(self.model, len(outputs)), outputs.values()))
        named = outputs_lib.named_outputs(self.model, reference)
        return {name: outputs_lib.to_probabilities(values, False, f"reference output {name!r}")
                for name, values in named.items()}


def _load(path: str) -> keras.Model | np.ndarray:
    """A saved `.keras` model or `.npy` predictions."""
    if not os.path.exists(path):
        raise ValueError(f"The reference file does not exist. Received: reference={path!r}")
    if path.endswith(".keras"):
        return keras.saving.load_model(path)
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    raise ValueError("A reference file must be a saved model (`.keras`) or saved predictions "
                     f"(`.npy`). Received: reference={path!r}")
