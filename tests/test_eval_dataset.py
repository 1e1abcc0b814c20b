"""Held-out data from separate files (`--eval_dataset`), encoded as the training data."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tf_smelu.data import (
    DENSE_FEATURE_NAME,
    DataFileError,
    MalformedRowError,
    check_eval_dataset,
    load_dataset,
)
from tf_smelu.training.config import TrainingConfig
from tf_smelu.training.problem import load_training_data

sys.path.insert(0, os.path.dirname(__file__))
from test_tfrecord_data import _record, _write  # noqa: E402

HEADER = ("user_id", "item_id", "price", "label")


def _csv(path, rows: list[dict], columns=HEADER) -> str:
    lines = [",".join(columns), *(",".join(str(row[name]) for name in columns) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _rows(first: int, count: int, users: int) -> list[dict]:
    return [{"user_id": f"u{i % users}", "item_id": i % 7, "price": i % 10 + 0.5,
             "label": int(i % 3 == 0)} for i in range(first, first + count)]


@pytest.fixture
def csv_files(tmp_path):
    """300 training rows of 10 users; 120 held-out rows of 15 users, columns reordered."""
    train = _csv(tmp_path / "train.csv", _rows(0, 300, users=10))
    held_out = _csv(tmp_path / "held_out.csv", _rows(1000, 120, users=15),
                    columns=("label", "price", "item_id", "user_id"))
    return train, held_out


def test_csv_held_out_rows_come_from_the_eval_file_encoded_as_the_training_rows(csv_files):
    train, held_out = csv_files
    loaded = load_dataset(f"csv:{train}", eval_dataset=f"csv:{held_out}")
    assert (len(loaded.train), len(loaded.test)) == (300, 120)  # nothing carved from train
    user_ids = loaded.feature_spec.vocab_sizes["user_id"]
    assert user_ids == 11  # the 10 training users and one out-of-vocabulary id
    assert loaded.dense_names == ("price",)
    held_out_users = loaded.test.features["user_id"]
    # Users u10..u14 appear only in the held-out file: they get the OOV id, no id of their own.
    assert np.sum(held_out_users == user_ids - 1) == sum(
        f"u{i % 15}" not in {f"u{u}" for u in range(10)} for i in range(1000, 1120))
    # Dense values are standardised with the training rows' statistics.
    train_prices = np.array([row["price"] for row in _rows(0, 300, users=10)])
    held_out_prices = np.sort([row["price"] for row in _rows(1000, 120, users=15)])
    expected = (held_out_prices - train_prices.mean()) / train_prices.std()
    got = np.sort(loaded.test.features[DENSE_FEATURE_NAME][:, 0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    labels = sorted(row["label"] for row in _rows(1000, 120, users=15))
    assert sorted(loaded.test.labels.tolist()) == labels


def test_the_caps_sample_each_file(csv_files):
    train, held_out = csv_files
    loaded = load_dataset(f"csv:{train}", eval_dataset=f"csv:{held_out}", train_examples=100,
                          eval_examples=50, seed=3)
    assert (len(loaded.train), len(loaded.test)) == (100, 50)
    again = load_dataset(f"csv:{train}", eval_dataset=f"csv:{held_out}", train_examples=100,
                         eval_examples=50, seed=3)
    np.testing.assert_array_equal(loaded.test.features["user_id"],
                                  again.test.features["user_id"])


@pytest.mark.parametrize("columns, missing, extra", [
    (("user_id", "item_id", "label"), ["price"], []),
    (("user_id", "item_id", "price", "label", "city"), [], ["city"]),
])
def test_a_csv_eval_file_with_other_columns_is_one_line(csv_files, tmp_path, columns, missing,
                                                        extra):
    train, _ = csv_files
    rows = [{**row, "city": "x"} for row in _rows(0, 20, users=3)]
    other = _csv(tmp_path / "other.csv", rows, columns)
    with pytest.raises(DataFileError) as raised:
        load_dataset(f"csv:{train}", eval_dataset=f"csv:{other}")
    assert str(raised.value) == (f"The held-out data {other} must have the columns of the "
                                 f"training data {train}: missing {missing}, extra {extra}")


def test_a_bad_row_of_the_eval_file_names_that_file(csv_files, tmp_path):
    train, _ = csv_files
    bad = _csv(tmp_path / "bad.csv", [*_rows(0, 5, users=3), {**_rows(5, 1, 3)[0], "label": 7}])
    with pytest.raises(MalformedRowError, match=rf"{bad}.*line 7.*label"):
        load_dataset(f"csv:{train}", eval_dataset=f"csv:{bad}")
    skipped = load_dataset(f"csv:{train}", eval_dataset=f"csv:{bad}", on_error="skip")
    assert len(skipped.test) == 5 and skipped.skipped_rows.count == 1
    assert skipped.skipped_rows.first[0][1].startswith(f"{bad}: label column 'label'")


def test_tfrecord_held_out_files_use_the_training_schema_and_vocabulary(tmp_path):
    train = _write(tmp_path / "train.tfrecord", [_record(i) for i in range(200)])
    held_out = _write(tmp_path / "held_out.tfrecord",
                      [{**_record(i), "user_id": 100 + i % 4} for i in range(500, 580)])
    loaded = load_dataset(f"tfrecord:{train}", eval_dataset=f"tfrecord:{held_out}")
    assert (len(loaded.train), len(loaded.test)) == (200, 80)
    oov = loaded.feature_spec.vocab_sizes["user_id"] - 1
    assert oov == 13 and np.all(loaded.test.features["user_id"] == oov)  # unseen in training
    retyped = _write(tmp_path / "retyped.tfrecord",
                     [{**_record(i), "user_id": b"u%d" % i} for i in range(40)])
    with pytest.raises(DataFileError) as raised:
        load_dataset(f"tfrecord:{train}", eval_dataset=f"tfrecord:{retyped}")
    assert str(raised.value) == (
        f"The held-out data {retyped} must have the features of the training data {train}: "
        f"feature 'user_id' holds bytes values at record index 0 of {retyped}, int64 values "
        "in the training data")
    extra = _write(tmp_path / "extra.tfrecord", [{**_record(i), "score": 1.5} for i in range(40)])
    with pytest.raises(DataFileError, match=r"missing \[\], extra \['score'\]$"):
        load_dataset(f"tfrecord:{train}", eval_dataset=f"tfrecord:{extra}")


def _criteo(path, first: int, count: int) -> str:
    """Criteo lines: label, 13 counts, 26 hex ids."""
    lines = ["\t".join([str(i % 2), *(str(i % (k + 2)) for k in range(13)),
                        *(f"{(i * (k + 3)) % 97:08x}" for k in range(26))])
             for i in range(first, first + count)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_criteo_held_out_file(tmp_path):
    train = _criteo(tmp_path / "day_0.tsv", 0, 300)
    held_out = _criteo(tmp_path / "day_1.tsv", 1000, 90)
    loaded = load_dataset(f"criteo:{train}", eval_dataset=f"criteo:{held_out}")
    assert (len(loaded.train), len(loaded.test)) == (300, 90)
    alone = load_dataset(f"criteo:{held_out}", train_examples=90, eval_examples=90)
    rows = np.concatenate([alone.train.features["C1"], alone.test.features["C1"]])
    np.testing.assert_array_equal(np.sort(loaded.test.features["C1"]), np.sort(rows))


@pytest.mark.parametrize("dataset, eval_dataset, label_column, message", [
    ("synthetic", "csv:/x.csv", None, "--eval_dataset applies to criteo, csv, tfrecord data"),
    ("movielens_100k", "csv:/x.csv", None, "held-out split of movielens_100k"),
    ("csv:/a.csv", "tfrecord:/b-*", None, "--eval_dataset must be csv data like --dataset"),
    ("criteo:/a.tsv", "csv:/b.csv", None, "a csv file cannot match"),
    ("csv:/a.csv#click", "csv:/b.csv#label", None, "label column 'label', the training "
     "data 'click'"),
    ("csv:/a.csv", "csv:/b.csv#label", "click", "the training data 'click'"),
])
def test_eval_datasets_that_cannot_match_are_refused_before_any_work(dataset, eval_dataset,
                                                                     label_column, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_eval_dataset(dataset, eval_dataset, label_column)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrainingConfig(dataset=dataset, eval_dataset=eval_dataset, label_column=label_column)


def test_matching_label_columns_are_fine():
    assert check_eval_dataset("csv:/a.csv", None) is None
    assert check_eval_dataset("csv:/a.csv#click", "csv:/b.csv").path == "/b.csv"
    assert check_eval_dataset("csv:/a.csv", "csv:/b.csv#label").label_column == "label"
    assert check_eval_dataset("csv:/a.csv", "csv:/b.csv#y", label_column="y") is not None


def test_the_training_configuration_loads_the_eval_dataset(csv_files):
    train, held_out = csv_files
    config = TrainingConfig(dataset=f"csv:{train}", eval_dataset=f"csv:{held_out}",
                            eval_examples=100)
    data = load_training_data(config)
    assert (len(data.train), len(data.test)) == (300, 100)


def test_every_worker_of_a_replica_job_reads_the_held_out_files(csv_files, tmp_path,
                                                                 monkeypatch):
    """A multi-worker job's workers get --eval_dataset, absolute: they may run elsewhere."""
    from absl import flags

    from tf_smelu.training.distributed import define_flags, parse_flags
    from tf_smelu.training.replica_jobs import ReplicaJob

    train, held_out = csv_files
    monkeypatch.chdir(os.path.dirname(held_out))
    config = TrainingConfig(dataset=f"csv:{os.path.basename(train)}",
                            eval_dataset=f"csv:{os.path.basename(held_out)}")
    command = ReplicaJob("relu", "sync", 0, str(tmp_path)).command(config)
    assert f"--eval_dataset=csv:{held_out}" in command
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["worker", *command[3:]])
    worker_config = parse_flags(flag_values)[0]
    assert str(worker_config.eval_dataset) == f"csv:{held_out}"
    data = load_training_data(worker_config)
    assert (len(data.train), len(data.test)) == (300, 120)
