"""Measure your own training: a DCN ranking model, its own compile and fit, its own tf.data.

A recommender engineer's training, written the way a keras-rs / TFRS user
writes it: one embedding per categorical field, a stack of DCN-v2 feature
crosses (`tf_smelu.models.CrossLayer`), an MLP, `model.compile(optimizer,
loss, metrics=[AUC])` and `model.fit` over a `tf.data` pipeline reading
GZIP TFRecord shards. `tf_smelu.reproducibility.ReplicaStudy` then trains R
replicas of exactly that training and measures how much their held-out
predictions disagree (prediction difference, PD), for ReLU and for smooth
activations (`study.compare`); `PredictionDifferenceCallback` logs, while one
more model trains, its PD against a "production" model (the churn a release
would cause). The part a user writes is `main` below the data checks: about
20 lines.

Without --data the example first writes TFRecord shards from the built-in
synthetic click generator (`tf_smelu.data.generate_examples`) into
--output_dir/data. Your own files need `--data` (training shards) and
`--eval_data` (held-out shards): `tf.train.Example`s with a 0/1 `label`,
int64 or bytes categorical features (hashed into --buckets ids, as a
`keras.layers.Hashing` layer would) and float dense features, one value
each (the `--dataset=tfrecord:GLOB` format of the main job). Every file is
read once and checked before the first training step: a damaged file or
record ends in one `error:` line naming the file and record.

Prints the accuracy/PD table and writes results.json and tradeoff.png to
--output_dir (the main job's report). About 2 minutes with the defaults on
2 CPU cores; --quick well under a minute.

Example:
  python examples/own_training_dcn.py
  python examples/own_training_dcn.py --activations=relu,smelu:1,gelu --replicas=4
  python examples/own_training_dcn.py --data='/data/clicks/train-*' --eval_data='/data/clicks/eval-*'
"""

from __future__ import annotations

import os
import time
import warnings

from absl import app, flags, logging

from tf_smelu import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Training TFRecord shards (file or glob); default: write "
                    "synthetic shards to --output_dir/data. Needs --eval_data.")
flags.DEFINE_string("eval_data", None, "Held-out TFRecord shards (file or glob), with --data.")
flags.DEFINE_string("output_dir", "runs/own_training_dcn",
                    "Where results.json, tradeoff.png (and the synthetic shards) go.")
flags.DEFINE_list("activations", ["relu", "smelu:1"],
                  "Hidden activations compared (name or name:beta); ReLU first.")
flags.DEFINE_list("sources", ["init"], "What varies between replicas: init, order, "
                  "op_nondeterminism (comma-separated; empty: nothing, the control).")
flags.DEFINE_integer("replicas", 3, "Replicas per activation (>= 2).", lower_bound=2)
flags.DEFINE_integer("epochs", 2, "Epochs of every fit.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Training batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam's learning rate.", lower_bound=0)
flags.DEFINE_integer("buckets", 1000, "Hash buckets (embedding rows) per categorical field.",
                     lower_bound=1)
flags.DEFINE_integer("embedding_dim", 8, "Embedding width per field.", lower_bound=1)
flags.DEFINE_integer("cross_layers", 2, "DCN-v2 feature-cross layers.", lower_bound=0)
flags.DEFINE_list("hidden_units", ["64", "32"], "Widths of the MLP (positive integers).")
flags.register_validator(
    "hidden_units", lambda units: bool(units) and all(u.isdigit() and int(u) > 0 for u in units),
    message="--hidden_units must be a comma-separated list of positive integers.",
)
flags.DEFINE_integer("train_examples", 40_000, "Synthetic training rows (without --data).",
                     lower_bound=1)
flags.DEFINE_integer("eval_examples", 5_000, "Synthetic held-out rows (without --data).",
                     lower_bound=1)
flags.DEFINE_integer("shards", 4, "Synthetic training shards written (without --data).",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "Base seed of the study and of the synthetic data.")
flags.DEFINE_boolean("quick", False, "Tiny run (< 1 min): 2 replicas, 1 epoch, 3,000 "
                     "synthetic rows, unless those flags are given.")

QUICK = {"replicas": 2, "epochs": 1, "train_examples": 3_000, "eval_examples": 1_000,
         "shards": 2, "hidden_units": ["16"]}
LABEL = "label"
NUMERIC = "numeric"  # the input of the stacked dense features ("dense" names a Dense layer)


# --------------------------------------------------------------------------
# Data: synthetic shards, the check pass, the tf.data pipeline.
# --------------------------------------------------------------------------


def write_synthetic_shards(directory: str, train_examples: int, eval_examples: int,
                           shards: int, seed: int) -> tuple[str, str]:
    """Writes GZIP TFRecord shards of synthetic clicks.

    Each `tf.train.Example` holds the categorical fields as int64 ids,
    `dense_<i>` floats and a 0/1 int64 `label`.

    Args:
        directory: Created if needed; gets `train-*` and `eval-*` files.
        train_examples: Training rows, spread over `shards` files.
        eval_examples: Held-out rows, in one file.
        shards: Training files.
        seed: Seed of the synthetic data (`SyntheticCTRConfig`).

    Returns:
        The globs `(training shards, held-out shards)`.
    """
    import numpy as np
    import tensorflow as tf

    from tf_smelu.data import DENSE_FEATURE_NAME, SyntheticCTRConfig, generate_examples

    config = SyntheticCTRConfig(num_examples=train_examples, num_eval_examples=eval_examples,
                                seed=seed)
    os.makedirs(directory, exist_ok=True)
    for split, prefix, count in (("train", "train", shards), ("test", "eval", 1)):
        examples = generate_examples(config, split)
        for shard in range(count):
            path = os.path.join(directory, f"{prefix}-{shard:05d}-of-{count:05d}.tfrecord.gz")
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for row in range(shard, len(examples.labels), count):
                    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(values[row])])) for name, values in examples.features.items()
                        if name != DENSE_FEATURE_NAME}
                    dense = np.asarray(examples.features[DENSE_FEATURE_NAME][row])
                    feature.update({f"dense_{i}": tf.train.Feature(
                        float_list=tf.train.FloatList(value=[v])) for i, v in enumerate(dense)})
                    feature[LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[int(examples.labels[row])]))
                    writer.write(tf.train.Example(features=tf.train.Features(
                        feature=feature)).SerializeToString())
    return (os.path.join(directory, "train-*.tfrecord.gz"),
            os.path.join(directory, "eval-*.tfrecord.gz"))


def check_shards(pattern: str, flag: str) -> tuple[list[str], dict[str, str]]:
    """Reads every record once, before training; returns `(files, {feature: kind})`.

    The check is `tf_smelu.data.load_tfrecord` (damaged files, records that
    are no `tf.train.Example`, changing types, a missing label or one other
    than 0/1, each named by file and record), keeping a one-row sample.

    Args:
        pattern: A TFRecord file or glob.
        flag: The flag that gave it, for messages.

    Returns:
        The sorted files and each used feature's kind: `"categorical:int64"`,
        `"categorical:bytes"`, `"dense"`, or `"label:int64"` / `"label:float"`.

    Raises:
        app.UsageError: If nothing matches `pattern`.
        DataFileError: See `load_tfrecord`.
    """
    import tensorflow as tf

    from tf_smelu.data.tfrecord import compression_type, load_tfrecord, tfrecord_files

    try:
        files = tfrecord_files(pattern)
    except (FileNotFoundError, IsADirectoryError) as error:
        raise app.UsageError(f"--{flag}={pattern}: {error}") from None
    schema = load_tfrecord(pattern, max_train_examples=1, max_test_examples=1,
                           dataset=f"--{flag}={pattern}").schema
    first = next(iter(tf.data.TFRecordDataset(files[0], compression_type(files[0])).take(1)))
    example = tf.train.Example.FromString(first.numpy()).features.feature

    def value_type(name: str) -> str:  # "int64", "bytes" or "float"
        return example[name].WhichOneof("kind").split("_")[0]

    kinds = {name: f"categorical:{value_type(name)}" for name in schema["categorical_columns"]}
    kinds.update({name: "dense" for name in schema["dense_columns"]})
    kinds[LABEL] = f"label:{value_type(LABEL)}"
    return files, kinds


def _parse_spec(kinds: dict[str, str]) -> dict[str, object]:
    """`tf.io.parse_example`'s features: a missing id is one id of its own, a missing
    dense value 0; the label has no default (`check_shards` found it in every record)."""
    import tensorflow as tf

    dtypes = {"int64": (tf.int64, -1), "bytes": (tf.string, ""), "float": (tf.float32, 0.0)}
    spec = {}
    for name, kind in kinds.items():
        dtype, default = dtypes["float" if kind == "dense" else kind.split(":")[1]]
        spec[name] = tf.io.FixedLenFeature(
            [], dtype, default_value=None if kind.startswith("label") else default)
    return spec


def make_dataset(files: list[str], kinds: dict[str, str], batch_size: int, buckets: int,
                 order_seed: int | None = None):
    """The user's input pipeline: TFRecord shards -> batches of `(features, label)`.

    Args:
        files: The shards (plain or GZIP, per file).
        kinds: Their features, as `check_shards` returns them.
        batch_size: Rows per batch.
        buckets: Categorical values are hashed into this many ids.
        order_seed: Shuffles the shards and (in a 10,000-row buffer) the
            examples; `None` reads them in order.

    Returns:
        A `tf.data.Dataset` of `({field: ids, "numeric": [batch, dense]}, label)`.
    """
    import tensorflow as tf

    from tf_smelu.data.tfrecord import compression_type

    spec = _parse_spec(kinds)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        features = {name: tf.strings.to_hash_bucket_fast(
            value if value.dtype == tf.string else tf.strings.as_string(value), buckets)
            for name, value in parsed.items() if kinds[name].startswith("categorical")}
        dense = [parsed[name] for name, kind in kinds.items() if kind == "dense"]
        if dense:
            features[NUMERIC] = tf.stack(dense, axis=1)
        return features, tf.cast(parsed[LABEL], tf.float32)

    shards = tf.data.Dataset.from_tensor_slices((files, [compression_type(f) for f in files]))
    if order_seed is not None:
        shards = shards.shuffle(len(files), seed=order_seed)
    records = shards.interleave(lambda path, compression: tf.data.TFRecordDataset(
        path, compression), cycle_length=2)  # sequential: deterministic
    if order_seed is not None:
        records = records.shuffle(10_000, seed=order_seed)
    return records.batch(batch_size).map(parse).prefetch(2)


# --------------------------------------------------------------------------
# The user's model: embeddings, feature crosses, MLP, compiled as in production.
# --------------------------------------------------------------------------


def dcn_builder(kinds: dict[str, str], buckets: int, embedding_dim: int, cross_layers: int,
                hidden_units: list[int], learning_rate: float):
    """`build_model(seed)` of a DCN-v2 ranking model, compiled with Adam, BCE and AUC.

    Args:
        kinds: The features, as `check_shards` returns them.
        buckets: Embedding rows per categorical field (its hash buckets).
        embedding_dim: Embedding width.
        cross_layers: DCN-v2 cross layers on the concatenated embeddings and
            dense features.
        hidden_units: Widths of the ReLU MLP after the crosses.
        learning_rate: Adam's learning rate.

    Returns:
        A function of a seed returning a new compiled model (the seed is
        unused: `ReplicaStudy` seeds Keras' global seeds before calling it).
    """
    import keras

    from tf_smelu.models import CrossLayer

    categorical = [name for name, kind in kinds.items() if kind.startswith("categorical")]
    has_dense = any(kind == "dense" for kind in kinds.values())

    def build_model(seed: int) -> keras.Model:
        inputs = {name: keras.Input((), dtype="int64", name=name) for name in categorical}
        if has_dense:
            inputs[NUMERIC] = keras.Input((sum(k == "dense" for k in kinds.values()),),
                                          name=NUMERIC)
        parts = [keras.layers.Embedding(buckets, embedding_dim, name=f"{name}_embedding")(
            inputs[name]) for name in categorical]
        x0 = keras.layers.Concatenate()(parts + ([inputs[NUMERIC]] if has_dense else []))
        x = x0
        for _ in range(cross_layers):
            x = CrossLayer()(x0, x)
        for units in hidden_units:
            x = keras.layers.Dense(units, activation="relu")(x)
        output = keras.layers.Dense(1, activation="sigmoid", name="click")(x)
        model = keras.Model(inputs, output, name="dcn")
        model.compile(keras.optimizers.Adam(learning_rate), keras.losses.BinaryCrossentropy(),
                      metrics=[keras.metrics.AUC(name="auc")])
        return model

    return build_model


# --------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------


def _apply_quick() -> None:
    for name, value in QUICK.items():
        if FLAGS.quick and not FLAGS[name].present:
            setattr(FLAGS, name, value)


def _check_flags() -> tuple[str, ...]:
    """Checks what the flags cannot check alone; returns the sources."""
    from tf_smelu.registry import Activation
    from tf_smelu.reproducibility import STUDY_SOURCES

    if (FLAGS.data is None) != (FLAGS.eval_data is None):
        raise app.UsageError("--data and --eval_data go together: training shards and the "
                             "held-out shards the replicas predict")
    for spec in FLAGS.activations:
        try:
            Activation.parse(spec)
        except ValueError as error:
            raise app.UsageError(f"--activations={','.join(FLAGS.activations)}: {error}") from None
    unknown = [s for s in FLAGS.sources if s not in STUDY_SOURCES]
    if unknown:
        raise app.UsageError(f"--sources={','.join(FLAGS.sources)}: unknown {unknown}; "
                             f"choose from {','.join(STUDY_SOURCES)}")
    cli.check_output_dir(FLAGS.output_dir)
    return tuple(FLAGS.sources)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _apply_quick()
    sources = _check_flags()
    if not FLAGS["verbosity"].present:
        # Every replica and every epoch's churn prediction traces new functions, by design:
        # TF's retracing warnings and Keras' dataset notes would bury the results.
        logging.set_verbosity(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module="keras|tensorflow")
    start = time.perf_counter()
    train_glob, eval_glob = FLAGS.data, FLAGS.eval_data
    if train_glob is None:
        train_glob, eval_glob = write_synthetic_shards(
            os.path.join(FLAGS.output_dir, "data"), FLAGS.train_examples, FLAGS.eval_examples,
            FLAGS.shards, FLAGS.seed)
        print(f"Wrote synthetic TFRecord shards: {train_glob}, {eval_glob}")
    train_files, kinds = check_shards(train_glob, "data")
    eval_files, eval_kinds = check_shards(eval_glob, "eval_data")
    if eval_kinds != kinds:
        raise app.UsageError(f"--eval_data={eval_glob} has features {eval_kinds}, but --data "
                             f"has {kinds}")

    # ---- The user's code: about 20 lines. ----
    from tf_smelu.experiment import report, write_results
    from tf_smelu.reproducibility import PredictionDifferenceCallback, ReplicaStudy

    build_model = dcn_builder(kinds, FLAGS.buckets, FLAGS.embedding_dim, FLAGS.cross_layers,
                              [int(u) for u in FLAGS.hidden_units], FLAGS.learning_rate)

    def train_data(order_seed):
        return make_dataset(train_files, kinds, FLAGS.batch_size, FLAGS.buckets, order_seed)

    held_out = make_dataset(eval_files, kinds, 4096, FLAGS.buckets)
    study = ReplicaStudy(build_model, train_data, held_out, replicas=FLAGS.replicas,
                         sources=sources, seed=FLAGS.seed, epochs=FLAGS.epochs)
    config = {**study.config, "learning_rate": FLAGS.learning_rate}
    # Finished activations are written at once: a Ctrl-C or a diverging one keeps them.
    rows = study.compare(FLAGS.activations, on_rows=lambda rows: write_results(
        FLAGS.output_dir, config, rows, complete=False))
    report(rows, config, FLAGS.output_dir)

    # Churn: one more retrain, measured against a "production" model while it trains.
    production = build_model(FLAGS.seed)
    production.fit(train_data(FLAGS.seed), epochs=FLAGS.epochs, verbose=0)
    churn = PredictionDifferenceCallback(production, held_out.map(lambda x, y: x))
    history = build_model(FLAGS.seed + 1).fit(train_data(FLAGS.seed + 1), epochs=FLAGS.epochs,
                                              verbose=0, callbacks=[churn])
    print("\nChurn of a retrain against production (relative PD after each epoch): "
          + ", ".join(f"{value:.4f}" for value in history.history["churn_rel_pd"]))
    print(f"Done in {time.perf_counter() - start:.0f}s.")


if __name__ == "__main__":
    cli.run(main)
