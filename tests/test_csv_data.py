"""Tests for the CSV loader, column schemas, the dataset-spec selector and shared helpers."""

from __future__ import annotations

import gzip
import json
import os
import re

import numpy as np
import pytest
from absl import flags

from tf_smelu.data import (
    DATA_ERRORS,
    DATASET_KINDS,
    DENSE_FEATURE_NAME,
    CategoricalFeature,
    DatasetSpec,
    check_dataset_options,
    describe_schema,
    feature_keys,
    is_feature_key,
    load_dataset,
    parse_dataset_spec,
    popularity_buckets,
    vocab_cap,
)
from tf_smelu.data import schema as schema_lib
from tf_smelu.data import tabular
from tf_smelu.data.csv_data import CONSTANT_DENSE_NAME, load_csv
from tf_smelu.data.encoding import Vocabulary
from tf_smelu.data.tabular import DataFileError, MalformedRowError, SplitConfig
from tf_smelu.models import build_model
from tf_smelu.training import config as config_flags
from tf_smelu.training.config import TrainingConfig

NUM_ROWS = 60
HEADER = "user,city,price,age,label"


def _data_lines(num_rows: int = NUM_ROWS) -> list[str]:
    """Rows with a string id, a string city, two numbers (one sometimes empty)."""
    cities = ["paris", "rome", "oslo"]
    return [
        f"u{index % 9},{cities[index % 3]},{index * 1.5:.1f},"
        f"{'' if index % 10 == 0 else 20 + index % 7},{index % 2}"
        for index in range(num_rows)
    ]


def _write_csv(tmp_path, lines: list[str], name: str = "data.csv", compress: bool = False):
    path = tmp_path / name
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def csv_path(tmp_path):
    return _write_csv(tmp_path, [HEADER, *_data_lines()])


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_column_types_are_inferred(tmp_path, compress):
    path = _write_csv(tmp_path, [HEADER, *_data_lines()], "data.csv.gz", compress)
    loaded = load_csv(path, test_fraction=0.25)
    # age: 7 whole numbers repeating over 54 rows, a code to embed.
    assert loaded.feature_spec.categorical_names == ("user", "city", "age")
    assert loaded.dense_names == ("price",) and loaded.feature_spec.num_dense == 1
    # Training vocabularies plus the out-of-vocabulary id.
    assert loaded.feature_spec.vocab_sizes["user"] == 10
    assert loaded.feature_spec.vocab_sizes["city"] == 4
    assert len(loaded.train) + len(loaded.test) == NUM_ROWS
    for examples in (loaded.train, loaded.test):
        assert set(examples.features) == {"user", "city", "age", DENSE_FEATURE_NAME}
        assert examples.features["user"].dtype == np.int64
        assert examples.features[DENSE_FEATURE_NAME].dtype == np.float32
        assert set(np.unique(examples.labels)) <= {0.0, 1.0}
        assert np.all(np.isfinite(examples.features[DENSE_FEATURE_NAME]))


def test_dense_columns_are_standardised_with_training_statistics(csv_path):
    loaded = load_csv(csv_path, test_fraction=0.25, seed=1,
                      categorical_columns=["user", "city"], dense_columns=["price", "age"])
    price = loaded.train.features[DENSE_FEATURE_NAME][:, 0]
    np.testing.assert_allclose([price.mean(), price.std()], [0.0, 1.0], atol=1e-5)
    # Missing ages become the training mean, i.e. 0 after standardising.
    raw_ages = np.array([line.split(",")[3] for line in _data_lines()])
    assert np.sum(loaded.train.features[DENSE_FEATURE_NAME][:, 1] == 0) >= 1
    assert np.sum(raw_ages == "") == NUM_ROWS // 10


def test_vocabulary_ids_are_training_popularity_ranks():
    vocabulary = Vocabulary.fit(np.array(["b", "a", "b", "c", "b", "a"], dtype=object))
    assert vocabulary.vocab_size == 4
    np.testing.assert_array_equal(vocabulary.encode(np.array(["b", "a", "c", "new"])), [0, 1, 2, 3])


def test_numeric_ids_and_constant_dense(tmp_path):
    lines = ["user_id,item_id,clicked", *[f"{i % 5},{i % 4},{i % 2}" for i in range(40)]]
    path = _write_csv(tmp_path, lines)
    inferred = load_csv(path, label_column="clicked", test_fraction=0.3)
    given = load_csv(
        path, label_column="clicked", categorical_columns=["user_id", "item_id"],
        item_column="item_id", test_fraction=0.3,
    )
    for loaded in (inferred, given):
        assert loaded.feature_spec.categorical_names == ("user_id", "item_id")
        assert loaded.dense_names == (CONSTANT_DENSE_NAME,) and loaded.item_field == "item_id"
        assert np.all(loaded.train.features[DENSE_FEATURE_NAME] == 0)
    assert inferred.schema["decisions"]["item_column"] == "inferred: name"
    assert given.schema["decisions"]["columns"] == {"user_id": "given", "item_id": "given"}


def test_hash_buckets_replace_the_vocabulary(csv_path):
    loaded = load_csv(csv_path, num_hash_buckets=7, test_fraction=0.25)
    assert loaded.feature_spec.vocab_sizes == {"user": 7, "city": 7, "age": 7}
    assert loaded.train.features["user"].max() < 7


def test_label_threshold_binarises_other_values(tmp_path):
    lines = ["item,rating", *[f"i{i % 3},{1 + i % 5}" for i in range(40)]]
    path = _write_csv(tmp_path, lines)
    with pytest.raises(MalformedRowError,
                       match=r"line 3: .*must be 0 or 1 \(set --label_threshold"):
        load_csv(path, label_column="rating")
    loaded = load_csv(path, label_column="rating", label_threshold=4, test_fraction=0.3)
    assert 0.3 < loaded.train.labels.mean() < 0.5  # 2 of 5 ratings are >= 4


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("u1,paris,1.0,30", "expected 5 columns"),
        ("u1,paris,1.0,30,1,extra", "found 6"),
        ("u1,paris,1.0,30,yes", "not a finite number. Received: label='yes'"),
        ("u1,paris,1.0,30,2", "must be 0 or 1"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad_line, problem):
    lines = [HEADER, *_data_lines(5), bad_line, *_data_lines(5)]
    path = _write_csv(tmp_path, lines, "ragged.csv")
    with pytest.raises(MalformedRowError, match="ragged.csv at line 7") as raised:
        load_csv(path)
    assert problem in str(raised.value)


def test_non_numeric_value_in_a_dense_column_is_reported(tmp_path):
    lines = [HEADER, *_data_lines(5), "u1,paris,cheap,30,1"]
    path = _write_csv(tmp_path, lines, "prices.csv")
    with pytest.raises(MalformedRowError, match="prices.csv at line 7: dense column 'price'"):
        load_csv(path, categorical_columns=["user"], dense_columns=["price"])
    # Inference instead makes `price` categorical.
    inferred = load_csv(_write_csv(tmp_path, [HEADER, *_data_lines(), lines[-1]]))
    assert "price" in inferred.feature_spec.categorical_names


def test_skip_mode_counts_malformed_rows(tmp_path):
    lines = [HEADER, *_data_lines(30), "too,few", *_data_lines(30), "u1,rome,1,2,7"]
    loaded = load_csv(_write_csv(tmp_path, lines), on_error="skip", test_fraction=0.25)
    assert loaded.skipped_rows.count == 2
    assert loaded.skipped_rows.line_numbers == [32, 63]
    assert len(loaded.train) + len(loaded.test) == 60


def test_missing_columns_name_the_flag_and_the_available_columns(csv_path):
    available = r"set --label_column to some of \['user', 'city', 'price', 'age', 'label'\]"
    with pytest.raises(DataFileError, match=available):
        load_csv(csv_path, label_column="click")
    with pytest.raises(DataFileError, match=r"--categorical_columns .*Received: "
                       r"categorical_columns=\['town'\]"):
        load_csv(csv_path, categorical_columns=["town"])


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "empty"),
        (["a,a,label", "1,2,0"], "unique, non-empty column names"),
    ],
)
def test_bad_headers_are_reported(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        load_csv(_write_csv(tmp_path, lines))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"user,label\nu1,1\n\xff\xfe,0\n", "line 3: not UTF-8 text (a binary file?)"),
        (gzip.compress(("user,label\n" + "".join(f"u{i},{i % 2}\n" for i in range(9000)))
                       .encode())[:9000], "the gzip data is truncated"),
    ],
)
def test_binary_and_truncated_files_are_data_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(MalformedRowError, match=re.escape(message)):
        load_csv(path)


@pytest.mark.parametrize("change", ["append", "truncate", "touch", "remove"])
def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path, monkeypatch, change):
    """Another program appends to, cuts or rewrites the file after reading began."""
    path = _write_csv(tmp_path, [HEADER, *_data_lines()])
    open_text = tabular.open_text

    def open_while_another_program_writes(name):
        stream = open_text(name)
        if change == "append":
            with open(name, "a", encoding="utf-8") as writer:
                writer.write("u1,rome,2.0,21,1\n")
        elif change == "truncate":
            os.truncate(name, os.path.getsize(name) // 2)
        elif change == "remove":  # the open stream still reads the old content
            os.remove(name)
        else:  # same size, new content
            os.utime(name, ns=(0, os.stat(name).st_mtime_ns + 1_000_000_000))
        return stream

    monkeypatch.setattr(tabular, "open_text", open_while_another_program_writes)
    with pytest.raises(DataFileError, match=f"{re.escape(str(path))} changed while it was read"
                       ) as raised:
        load_csv(path)
    assert isinstance(raised.value, DATA_ERRORS) and "\n" not in str(raised.value)
    assert {"append": "bytes", "truncate": "bytes", "touch": "(modified)",
            "remove": "(removed)"}[change] in str(raised.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here.csv"):
        load_csv(tmp_path / "nothing_here.csv")


# --------------------------------------------------------------------------
# Column names.
# --------------------------------------------------------------------------


def test_feature_keys_keep_identifiers_and_derive_the_rest_deterministically():
    columns = ["user name", "price (€)", "usuário", "2nd", "dense", "user_name", "日本", "ß"]
    keys = feature_keys(columns)
    assert keys == {"user name": "user_name_2", "price (€)": "price", "usuário": "usuario",
                    "2nd": "f_2nd", "dense": "dense_2", "user_name": "user_name",
                    "日本": "feature", "ß": "feature_2"}
    assert all(is_feature_key(key) and key != DENSE_FEATURE_NAME for key in keys.values())
    assert len(set(keys.values())) == len(keys)
    assert feature_keys(list(columns)) == keys  # the same names, the same keys
    assert feature_keys(["user_id", "C1", "_x"]) == {"user_id": "user_id", "C1": "C1", "_x": "_x"}
    with pytest.raises(ValueError, match="ASCII identifier.*Received: name='user name'"):
        CategoricalFeature("user name", 3)


def test_any_header_text_is_a_column_name(tmp_path):
    """Spreadsheet exports: a byte-order mark, spaces, symbols and accents in the names."""
    header = "\ufeffuser name,price (€),usuário,dense,label"
    rows = [f"ana {i % 7},{i * 0.5},x{i % 4},d{i % 3},{i % 2}" for i in range(80)]
    path = tmp_path / "export.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    loaded = load_dataset(f"csv:{path}")
    spec = loaded.feature_spec
    assert spec.categorical_names == ("user_name", "usuario", "dense_2")
    assert spec.columns == {"user name": "user_name", "usuário": "usuario", "dense": "dense_2"}
    assert set(loaded.train.features) == {"user_name", "usuario", "dense_2", DENSE_FEATURE_NAME}
    assert loaded.dense_names == ("price (€)",)
    schema = loaded.schema
    assert schema["categorical_columns"] == ["user name", "usuário", "dense"]
    assert schema["feature_keys"] == spec.columns
    assert schema["dense_columns"] == ["price (€)"] and schema["missing_values"] == {
        "price (€)": 0}
    text = describe_schema(schema)
    assert "user name (input user_name; inferred: text" in text
    assert "usuário (input usuario; inferred: text" in text
    assert "price (€) (inferred: numbers)" in text
    for name in ("mlp", "dcn"):  # Keras accepts the keys as input and layer names
        model = build_model(name, spec, hidden_units=[4], embedding_dim=2) if name == "mlp" \
            else build_model(name, spec, top_units=[4], bottom_units=[2], embedding_dim=2)
        assert model(loaded.test.features).shape == (len(loaded.test), 1)


def test_a_byte_order_mark_is_not_part_of_the_label_column(tmp_path):
    lines = ["label,user,item", *[f"{i % 2},u{i % 5},i{i % 3}" for i in range(40)]]
    for compress in (False, True):
        path = tmp_path / f"bom{compress}.csv"
        data = ("\n".join(lines) + "\n").encode("utf-8-sig")
        path.write_bytes(gzip.compress(data) if compress else data)
        loaded = load_csv(path)
        assert loaded.schema["label_column"] == "label"
        assert loaded.feature_spec.categorical_names == ("user", "item")


# --------------------------------------------------------------------------
# Schemas: inferred, given, conflicting.
# --------------------------------------------------------------------------


def _interaction_log(num_rows: int = 300) -> list[str]:
    """`user_id,item_id,timestamp,label` with integer ids, as most exports look."""
    return ["user_id,item_id,timestamp,label", *[
        f"{index % 17},{(index * 7) % 40},{880_000_000 + 61 * index},{index % 3 == 0:d}"
        for index in range(num_rows)
    ]]


def test_an_interaction_log_with_integer_ids_needs_no_flags(tmp_path):
    path = _write_csv(tmp_path, _interaction_log())
    loaded = load_dataset(f"csv:{path}", train_examples=200, eval_examples=20)
    assert loaded.feature_spec.categorical_names == ("user_id", "item_id")
    assert loaded.dense_names == ("timestamp",) and loaded.item_field == "item_id"
    schema = loaded.schema
    assert schema == {
        "dataset": f"csv:{path}",
        "label_column": "label",
        "label_threshold": None,
        "categorical_columns": ["user_id", "item_id"],
        "dense_columns": ["timestamp"],
        "ignored_columns": [],
        "item_column": "item_id",
        "missing_values": {"timestamp": 0},
        "decisions": {
            "label_column": "default",
            "label_threshold": "none",
            "item_column": "inferred: name",
            "columns": {
                "user_id": "inferred: whole numbers, id-like name",
                "item_id": "inferred: whole numbers, id-like name",
                "timestamp": "inferred: whole numbers, time-like name",
            },
        },
        "rows_read": 300,
        "feature_keys": {"user_id": "user_id", "item_id": "item_id"},
    }
    assert json.loads(json.dumps(schema)) == schema  # ready for results.json
    text = describe_schema(schema)
    assert text.splitlines()[0] == f"Data csv:{path} (300 rows read)"
    assert "categorical (2): user_id (inferred: whole numbers, id-like name)" in text
    assert "dense (1): timestamp (inferred: whole numbers, time-like name)" in text


@pytest.mark.parametrize("label_in_spec", [False, True])
def test_a_rating_csv_runs_with_label_and_threshold(tmp_path, label_in_spec):
    lines = ["user_id,item_id,rating", *[f"{i % 9},{i % 13},{1 + i % 5}" for i in range(200)]]
    path = _write_csv(tmp_path, lines)
    with pytest.raises(DataFileError, match="set --label_column to some of"):
        load_dataset(f"csv:{path}")
    with pytest.raises(MalformedRowError, match="line 3: .*set --label_threshold"):
        load_dataset(f"csv:{path}#rating")
    spec = f"csv:{path}#rating" if label_in_spec else f"csv:{path}"
    loaded = load_dataset(spec, label_column=None if label_in_spec else "rating",
                          label_threshold=4)
    assert loaded.feature_spec.categorical_names == ("user_id", "item_id")
    assert 0.3 < loaded.train.labels.mean() < 0.5  # 2 of 5 ratings are >= 4
    assert (loaded.schema["label_column"], loaded.schema["label_threshold"]) == ("rating", 4.0)
    assert loaded.schema["decisions"]["label_threshold"] == "given"
    assert "label: rating >= 4 (label_column given" in describe_schema(loaded.schema)


@pytest.mark.parametrize("given", [False, True])
def test_non_finite_values_keep_a_column_numeric(tmp_path, given):
    markers = ["nan", "inf", "-inf", "", "NULL", "NaN"]
    lines = ["user,price,label", *[
        f"u{i % 7},{markers[i // 10] if i % 10 == 0 and i < 60 else 1.5 * i},{i % 2}"
        for i in range(100)
    ]]
    columns = dict(categorical_columns=["user"], dense_columns=["price"]) if given else {}
    loaded = load_csv(_write_csv(tmp_path, lines), test_fraction=0.2, **columns)
    assert loaded.dense_names == ("price",)
    assert loaded.schema["missing_values"] == {"price": 6}
    for examples in (loaded.train, loaded.test):
        assert np.all(np.isfinite(examples.features[DENSE_FEATURE_NAME]))
    assert "missing values (dense, replaced by the training mean): price 6" in (
        describe_schema(loaded.schema))


@pytest.mark.parametrize(
    "name, values, expected, reason",
    [
        ("id", ["1", "2", "3", "4"], "categorical", "whole numbers, id-like name"),
        ("userId", ["10", "20", "30", "40"], "categorical", "whole numbers, id-like name"),
        ("MovieID", ["10", "20", "30", "40"], "categorical", "whole numbers, id-like name"),
        ("timestamp", ["5", "5", "5", "6"], "dense", "whole numbers, time-like name"),
        ("created_at", ["5", "6", "7", "8"], "dense", "whole numbers, time-like name"),
        ("eventTime", ["5", "6", "7", "8"], "dense", "whole numbers, time-like name"),
        ("age", ["18", "25", "18", "25"], "categorical", "whole numbers, 2 distinct in 4"),
        ("counter", ["1", "2", "3", "4"], "dense", "whole numbers, 4 distinct in 4"),
        ("price", ["1.5", "2", "nan", "inf"], "dense", "numbers"),
        ("score", ["1.0", "2.0", "1.0", "2.0"], "categorical", "whole numbers, 2 distinct in 4"),
        ("city", ["paris", "3", "rome", ""], "categorical", "text, e.g. 'paris' at line 2"),
        ("paid", ["1", "x", "1", "1"], "categorical", "text, e.g. 'x' at line 3"),
        ("empty", ["", "", "nan", ""], "dense", "every value missing"),
    ],
)
def test_inference_rules(name, values, expected, reason):
    values = np.array(values, dtype=object)
    numbers, first_text = schema_lib.parse_numbers(values)
    kind, why, keys = schema_lib.infer_text_column(name, values, numbers, first_text, [2, 3, 4, 5])
    assert (kind, why) == (expected, f"inferred: {reason}")
    assert (keys is not None) == (kind == "categorical" and first_text is None)


def test_whole_number_ids_are_compared_as_integers():
    values = np.array(["7", "07", "7.0", "", "9223372036854775807", "9223372036854775806"],
                      dtype=object)
    numbers, _ = schema_lib.parse_numbers(values)
    keys = schema_lib.integer_keys(values, numbers)
    # 64-bit hashed ids keep every digit (float64 would merge the last two).
    assert keys.tolist() == ["7", "7", "7", "", "9223372036854775807", "9223372036854775806"]
    assert schema_lib.integer_keys(values[:1], np.array([7.5])) is None


def test_given_columns_override_inference_and_ignore_the_rest(tmp_path):
    path = _write_csv(tmp_path, _interaction_log())
    loaded = load_dataset(f"csv:{path}", categorical_columns=["item_id", "timestamp"],
                          train_examples=100, eval_examples=10)
    assert loaded.feature_spec.categorical_names == ("item_id", "timestamp")
    assert loaded.dense_names == (CONSTANT_DENSE_NAME,)
    assert loaded.schema["ignored_columns"] == ["user_id"]
    assert loaded.schema["decisions"]["columns"]["timestamp"] == "given"
    assert "ignored (1): user_id (given: not in" in describe_schema(loaded.schema)


@pytest.mark.parametrize(
    "lines, options, message",
    [
        (["user,label", "a,1", "b,1", "c,1"], {}, "Every label of .* is 1 \\(3 rows\\)"),
        (["user,stars", "a,1", "b,2", "c,3"], dict(label_column="stars", label_threshold=4),
         "Every label of .* is 0 .*check --label_threshold"),
    ],
)
def test_one_class_labels_are_an_error(tmp_path, lines, options, message):
    with pytest.raises(DataFileError, match=message):
        load_csv(_write_csv(tmp_path, lines), **options)


def test_a_file_without_categorical_columns_names_the_flag(tmp_path):
    lines = ["price,weight,label", *[f"{i * 0.5},{i * 1.5},{i % 2}" for i in range(30)]]
    with pytest.raises(DataFileError, match="name id columns with --categorical_columns"):
        load_csv(_write_csv(tmp_path, lines))


@pytest.mark.parametrize(
    "spec, options, message",
    [
        ("csv:/x.csv#click", dict(label_column="label"),
         "label column is given twice, as 'csv:/x.csv#click' and as --label_column=label"),
        ("synthetic", dict(label_threshold=4.0),
         ("--label_threshold applies to csv, tfrecord, movielens_100k, movielens_1m data only. "
          "Received: dataset='synthetic', label_threshold=4.0")),
        ("criteo:/x.tsv", dict(categorical_columns=["C1"]), "--categorical_columns applies to"),
        ("movielens_100k", dict(dense_columns=["timestamp"]), "--dense_columns applies to"),
        ("csv:/x.csv", dict(data_dir="/tfds"), "--data_dir applies to movielens_100k"),
        ("synthetic", dict(label_column="click"), "--label_column applies to csv, tfrecord"),
        ("csv:/x.csv", dict(categorical_columns=["a"], dense_columns=["a", "b"]),
         r"\['a'\] are named in both --categorical_columns and --dense_columns"),
        ("csv:/x.csv#y", dict(dense_columns=["y"]), "label column 'y' cannot also be a feature"),
        ("csv:/x.csv", dict(categorical_columns=["user", "label"]),
         r"label column 'label' \(the default label; set --label_column to another\) cannot"),
        ("tfrecord:/x/*", dict(dense_columns=["label"]), "'label' \\(the default label"),
        ("csv:/x.csv", dict(categorical_columns="user"), "not a string"),
        ("csv:/x.csv", dict(dense_columns=["a", "a"]), "unique, non-empty column names"),
        ("csv:/x.csv", dict(label_threshold=float("nan")), "finite number"),
        ("csv:/x.csv", dict(label_column=""), "--label_column must be a non-empty string"),
    ],
)
def test_conflicting_or_inapplicable_options_are_errors(spec, options, message):
    with pytest.raises(ValueError, match=message):
        check_dataset_options(spec, **options)
    with pytest.raises(ValueError, match=message):
        load_dataset(spec, **options)


@pytest.mark.parametrize(
    "spec, options",
    [
        ("csv:/x.csv#click", dict(label_column="click")),  # the same name twice is fine
        ("movielens_1m", dict(label_threshold=3.5, data_dir="/tfds")),
        ("tfrecord:/x/*", dict(label_column="y", categorical_columns=("a",), label_threshold=1)),
        ("synthetic", dict(categorical_columns=(), dense_columns=None)),
    ],
)
def test_applicable_options_pass(spec, options):
    check_dataset_options(spec, **options)


def test_schema_errors_are_data_errors_for_the_command_lines(tmp_path, csv_path):
    with pytest.raises(DATA_ERRORS):
        load_csv(csv_path, label_column="click")
    with pytest.raises(DATA_ERRORS):
        load_csv(_write_csv(tmp_path, ["a,label"], "header_only.csv"))


def test_fixed_formats_carry_a_schema_too():
    loaded = load_dataset("synthetic", train_examples=100, eval_examples=20)
    schema = loaded.schema
    assert schema["categorical_columns"] == list(loaded.feature_spec.categorical_names)
    assert schema["dense_columns"] == list(loaded.dense_names)
    assert schema["decisions"]["label_column"] == "fixed" and schema["item_column"] == "item_id"
    assert "(fixed)" in describe_schema(schema)


def test_schema_flags_round_trip_through_the_command_line():
    config = TrainingConfig(
        dataset="csv:/data/ratings.csv", label_column="rating",
        categorical_columns=["user_id", "item_id"], dense_columns=("age",), label_threshold=4.0,
    )
    assert config.categorical_columns == ("user_id", "item_id")  # lists become tuples
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainingConfig, flag_values=flag_values)
    flag_values(["program", *config_flags.to_args(config)])
    assert config_flags.from_flags(TrainingConfig, flag_values) == config
    movielens = TrainingConfig(dataset="movielens_1m", data_dir="/tfds", label_threshold=3.0)
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainingConfig, flag_values=flag_values)
    flag_values(["program", *config_flags.to_args(movielens)])
    assert config_flags.from_flags(TrainingConfig, flag_values) == movielens


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label_threshold=4"], "--label_threshold applies to csv"),
        (["--dataset=csv:/x.csv#a", "--label_column=b"], "given twice"),
        (["--dataset=csv:/x.csv", "--categorical_columns=a,a"], "unique"),
    ],
)
def test_bad_schema_flags_fail_when_the_config_is_built(args, message):
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainingConfig, flag_values=flag_values)
    try:
        flag_values(["program", *args])
    except flags.IllegalFlagValueError as error:  # checks of one flag run as validators
        assert message in str(error)
        return
    with pytest.raises(ValueError, match=message):
        config_flags.from_flags(TrainingConfig, flag_values)


# --------------------------------------------------------------------------
# Dataset spec selector.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("synthetic", DatasetSpec("synthetic")),
        ("movielens_100k", DatasetSpec("movielens_100k")),
        ("movielens_1m", DatasetSpec("movielens_1m")),
        ("criteo:/data/day_0.gz", DatasetSpec("criteo", "/data/day_0.gz")),
        ("csv:/data/a.csv", DatasetSpec("csv", "/data/a.csv")),
        ("csv:/data/a.csv#clicked", DatasetSpec("csv", "/data/a.csv", "clicked")),
        ("tfrecord:/data/part-*.gz", DatasetSpec("tfrecord", "/data/part-*.gz")),
        ("tfrecord:/data/*#click", DatasetSpec("tfrecord", "/data/*", "click")),
    ],
)
def test_dataset_specs_parse(spec, expected):
    assert parse_dataset_spec(spec) == expected
    assert DatasetSpec.parse(spec) == expected
    assert str(expected) == expected.to_text() == spec
    assert parse_dataset_spec(expected) is expected  # parsed once


ROUND_TRIP_SPECS = [
    DatasetSpec("synthetic"),
    DatasetSpec("movielens_100k"),
    DatasetSpec("movielens_1m"),
    DatasetSpec("criteo", "/data/day_0.gz"),
    DatasetSpec("criteo", "relative/dir:with#odd chars.tsv"),
    DatasetSpec("csv", "/data/a.csv"),
    DatasetSpec("csv", "data/a.csv", "clicked"),
    DatasetSpec("csv", "/data/with#hash.csv", "clicked"),
    DatasetSpec("tfrecord", "/data/train-*-of-00010"),
    DatasetSpec("tfrecord", "data/#odd/*.tfrecord", "click"),
]


def test_every_kind_has_a_round_trip_case():
    assert {spec.kind for spec in ROUND_TRIP_SPECS} == set(DATASET_KINDS)


@pytest.mark.parametrize("spec", ROUND_TRIP_SPECS, ids=str)
def test_dataset_spec_text_parses_back_to_an_equal_spec(spec):
    assert DatasetSpec.parse(str(spec)) == spec
    assert parse_dataset_spec(spec.to_text()) == spec


def test_absolute_dataset_spec_resolves_only_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = DatasetSpec("csv", "data/a.csv", "clicked")
    assert spec.absolute() == DatasetSpec("csv", str(tmp_path / "data" / "a.csv"), "clicked")
    assert DatasetSpec.parse(str(spec.absolute())) == spec.absolute()
    assert DatasetSpec("synthetic").absolute() == DatasetSpec("synthetic")
    on_gcs = DatasetSpec("tfrecord", "gs://bucket/part-*", "click")
    assert on_gcs.absolute() == on_gcs
    assert DatasetSpec("synthetic").is_synthetic
    assert not spec.is_synthetic


@pytest.mark.parametrize(
    "fields, message",
    [
        (("imagenet",), "Unknown dataset kind"),
        (("synthetic", "/x"), "takes no path"),
        (("criteo",), "needs a file path"),
        (("csv", ""), "needs a file path"),
        (("criteo", "/x", "label"), "only for csv"),
        (("csv", "/x", ""), "non-empty"),
        (("csv", "/x", "a#b"), "must not contain '#'"),
        (("csv", "/a#b.csv"), "needs an explicit label column"),
        (("tfrecord", "/a#b/*"), "needs an explicit label column"),
        (("movielens_1m", None, "rating"), "only for csv and tfrecord"),
    ],
)
def test_dataset_specs_no_text_describes_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec(*fields)


@pytest.mark.parametrize(
    "spec, max_vocab_size, expected",
    [
        ("synthetic", None, None),
        ("synthetic", 0, None),
        ("synthetic", 50, 50),
        (DatasetSpec("synthetic"), 50, 50),
        ("criteo:/x.tsv", None, None),
        ("criteo:/x.tsv", 0, None),
        ("movielens_100k", 0, None),
    ],
)
def test_vocab_cap_zero_or_none_means_no_cap(spec, max_vocab_size, expected):
    assert vocab_cap(spec, max_vocab_size) == expected


@pytest.mark.parametrize(
    "spec, max_vocab_size, message",
    [
        ("criteo:/x.tsv", 100, "applies to synthetic data only. "
         "Received: dataset='criteo:/x.tsv', max_vocab_size=100"),
        ("csv:/x.csv#y", 1, "synthetic data only"),
        ("synthetic", -1, "non-negative integer. Received: max_vocab_size=-1"),
        ("criteo:/x.tsv", -1, "non-negative integer"),
        ("synthetic", 2.5, "non-negative integer"),
    ],
)
def test_vocab_cap_rejects_a_cap_of_real_data_and_negatives(spec, max_vocab_size, message):
    with pytest.raises(ValueError, match=message):
        vocab_cap(spec, max_vocab_size)
    with pytest.raises(ValueError, match=message):
        load_dataset(spec, max_vocab_size=max_vocab_size)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagenet", "Unknown dataset spec. Expected one of: synthetic, movielens_100k"),
        ("movielens", "Received: dataset='movielens'"),
        ("parquet:/x.parquet", "Unknown dataset spec"),
        ("criteo:", "needs a file path"),
        ("csv:/a.csv#", "label column after '#' is empty"),
    ],
)
def test_bad_dataset_specs_are_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset_spec(spec)
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


@pytest.mark.parametrize("label_in_spec", [False, True])
def test_dataset_spec_selects_a_csv_file(tmp_path, label_in_spec):
    lines = [line.replace("label", "clicked") for line in [HEADER]] + _data_lines()
    path = _write_csv(tmp_path, lines)
    if label_in_spec:
        loaded = load_dataset(f"csv:{path}#clicked", train_examples=30, eval_examples=3)
    else:
        loaded = load_dataset(
            f"csv:{path}", label_column="clicked", train_examples=30, eval_examples=3
        )
    assert (len(loaded.train), len(loaded.test)) == (30, 3)
    assert loaded.feature_spec.categorical_names == ("user", "city", "age")
    assert loaded.schema["label_column"] == "clicked"


def test_dataset_spec_selects_synthetic_data():
    loaded = load_dataset("synthetic", train_examples=300, eval_examples=100, seed=1)
    assert (len(loaded.train), len(loaded.test)) == (300, 100)
    assert loaded.item_field == "item_id" and "item_id" in loaded.feature_spec.categorical_names
    assert np.all(np.isfinite(loaded.train.true_logits))


def test_load_dataset_takes_a_parsed_spec_and_a_zero_vocab_cap(tmp_path):
    path = _write_csv(tmp_path, [HEADER] + _data_lines())
    from_text = load_dataset(f"csv:{path}", train_examples=30, eval_examples=3)
    from_spec = load_dataset(
        DatasetSpec("csv", str(path)), train_examples=30, eval_examples=3, max_vocab_size=0
    )
    np.testing.assert_array_equal(from_spec.train.labels, from_text.train.labels)
    assert from_spec.feature_spec == from_text.feature_spec


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_max_vocab_size_caps_synthetic_vocabularies():
    capped = load_dataset("synthetic", train_examples=200, eval_examples=50, max_vocab_size=30)
    assert max(capped.feature_spec.vocab_sizes.values()) == 30
    assert capped.feature_spec.vocab_sizes["device"] == 16  # smaller fields unchanged
    uncapped = load_dataset("synthetic", train_examples=200, eval_examples=50, max_vocab_size=0)
    assert uncapped.feature_spec.vocab_sizes["user_id"] == 100_000


# --------------------------------------------------------------------------
# Shared helpers: split and popularity groups.
# --------------------------------------------------------------------------


def test_split_depends_only_on_key_and_seed():
    keys = np.arange(1, 20_001)
    split = SplitConfig(test_fraction=0.2, seed=5)
    is_test = split.is_test(keys)
    assert abs(is_test.mean() - 0.2) < 0.02
    # A row's side does not depend on the other rows, and strings hash alike.
    np.testing.assert_array_equal(split.is_test(keys[::-1])[::-1], is_test)
    np.testing.assert_array_equal(split.is_test(keys.astype(str).astype(object)), is_test)
    assert not np.array_equal(SplitConfig(0.2, seed=6).is_test(keys), is_test)

    train_rows, test_rows = SplitConfig(0.2, 5, max_train_examples=100).rows(keys, "keys")
    assert len(train_rows) == 100 and len(test_rows) == is_test.sum()
    assert not is_test[train_rows].any() and is_test[test_rows].all()
    assert not np.all(np.diff(train_rows) > 0)  # shuffled


def test_split_with_an_empty_side_is_an_error():
    with pytest.raises(ValueError, match="test split of tiny is empty"):
        SplitConfig(test_fraction=0.01).rows(np.arange(3), "tiny")


def test_popularity_buckets_follow_training_traffic():
    # Id 0 carries 60% of the traffic, ids 1-2 the next 30%, id 3 10%.
    train_ids = np.array([0] * 6 + [1] * 2 + [2] + [3])
    np.testing.assert_array_equal(
        popularity_buckets(train_ids, np.array([0, 1, 2, 3, 9])), [0, 1, 1, 2, 2]
    )
    with pytest.raises(ValueError, match="traffic_quantiles"):
        popularity_buckets(train_ids, train_ids, (0.9, 0.5))
