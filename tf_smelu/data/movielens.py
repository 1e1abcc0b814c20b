"""MovieLens ratings as CTR-style examples, via TensorFlow Datasets.

Uses the TFDS datasets `movielens/100k-ratings` (100,000 ratings, 943
users, 1,682 movies) and `movielens/1m-ratings` (1,000,209 ratings, 6,040
users, ~3,900 movies), the two versions with user demographics.

Download
--------
On first use TFDS downloads the ratings from https://files.grouplens.org
(about 5 MB for 100k, 6 MB for 1m) and prepares them under `data_dir`
(default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`); later uses read the
prepared copy and need no network.

Offline, this fails fast: the prepared copy is looked for first, without
network; if it is missing, one request with a `PROBE_TIMEOUT_SECONDS`
timeout checks that the download server answers before TFDS is asked to
download (TFDS's own retries would take minutes).  When the server does not
answer, or the download fails, a `MovieLensUnavailableError` says how to
point `data_dir` (flag `--data_dir`, or `TFDS_DATA_DIR`) at a prepared
copy, and anything the failed attempt created under `data_dir` is removed.
Prepare a copy on a machine with network access with

    python -c "import tensorflow_datasets as tfds; tfds.load('movielens/100k-ratings', data_dir='DIR')"

and copy `DIR`.  `download=False` never uses the network.

Examples
--------
One example per rating.  Categorical fields (int64 ids), each encoded with a
`Vocabulary` built from the *training* split: ids are popularity ranks
(0 = most frequent training value) and values never seen in training share
the out-of-vocabulary id `vocab_size - 1`:

* `user_id`, `movie_id`;
* `movie_genre`: the *first* listed genre of the movie (a movie with no
  genre gets its own value), a deliberately simple stand-in for the
  multi-genre list;
* `user_age`: TFDS `bucketized_user_age` (1, 18, 25, 35, 45, 50, 56);
* `user_occupation`: TFDS `user_occupation_label` (22 classes);
* `user_gender`.

Dense features (float32, standardised with training mean and std):
`timestamp` (seconds since the epoch), `hour_of_day` and
`day_of_week` (UTC, Monday = 0) of the rating.

Labels: `label="binary"` (default) gives `1.0` for ratings
`>= positive_rating` (4 stars) and `0.0` otherwise, like a click;
`label="rating"` gives the star rating itself as float32, for regression
(not for the binary cross-entropy of the CTR models).

Split: a rating goes to the test split by a seeded hash of
`user_id/movie_id/timestamp` (see `SplitConfig`), so the split does not
depend on the order in which TFDS yields the ratings.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tf_smelu.data.encoding import RawColumns, Vocabulary, encode_splits
from tf_smelu.data.tabular import DEFAULT_TEST_FRACTION, LoadedDataset, SplitConfig
from tf_smelu.validation import require_in_range

VARIANTS: dict[str, str] = {
    "100k": "movielens/100k-ratings",
    "1m": "movielens/1m-ratings",
}
"""Supported variants -> TFDS dataset names."""

DOWNLOAD_URLS: dict[str, str] = {
    "100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}
"""What TFDS downloads for each variant."""

PROBE_TIMEOUT_SECONDS = 5.0
"""How long the check that the download server answers may take."""

LABEL_KINDS: tuple[str, ...] = ("binary", "rating")
RATING_FEATURE = "user_rating"
"""The TFDS feature the labels come from."""

CATEGORICAL_FEATURE_NAMES: tuple[str, ...] = (
    "user_id",
    "movie_id",
    "movie_genre",
    "user_age",
    "user_occupation",
    "user_gender",
)
DENSE_FEATURE_NAMES: tuple[str, ...] = ("timestamp", "hour_of_day", "day_of_week")
ITEM_FIELD = "movie_id"

DEFAULT_POSITIVE_RATING = 4.0

_NO_GENRE = -1  # genre class of a movie with an empty genre list
_SECONDS_PER_HOUR = 3600
_SECONDS_PER_DAY = 86_400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0
_READ_BATCH_SIZE = 65_536


class MovieLensUnavailableError(RuntimeError):
    """TFDS could neither find nor download the MovieLens data."""


def _tfds_name(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {tuple(VARIANTS)}. Received: variant={variant!r}"
        )
    return VARIANTS[variant]


def _download_problem(url: str) -> str | None:
    """Why `url` cannot be downloaded now (one quick request), or `None`."""
    import requests  # deferred, like TFDS, which depends on it

    try:
        response = requests.head(url, timeout=PROBE_TIMEOUT_SECONDS, allow_redirects=True)
    except requests.RequestException as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code >= 400:
        return f"HTTP status {response.status_code}"
    return None


def _paths_below(roots: Sequence[str]) -> set[str]:
    """Every file and directory at or below `roots` (those that exist)."""
    paths = set()
    for root in roots:
        if not os.path.lexists(root):
            continue
        paths.add(root)
        for directory, subdirectories, files in os.walk(root):
            paths.update(os.path.join(directory, name) for name in (*subdirectories, *files))
    return paths


def _remove_new_paths(roots: Sequence[str], before: set[str]) -> None:
    """Removes what appeared at or below `roots` since `before` was taken."""
    new = _paths_below(roots) - before
    for path in sorted(new):
        if os.path.dirname(path) in new:
            continue  # removed with its new parent
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _unavailable(name: str, location: str, reason: str) -> MovieLensUnavailableError:
    return MovieLensUnavailableError(
        f"Could not load the MovieLens dataset {name!r} with TensorFlow Datasets: {reason}. "
        f"Point --data_dir (or TFDS_DATA_DIR) at a TFDS data directory holding it, prepared "
        "on a machine with network access by: python -c \"import tensorflow_datasets as tfds; "
        f"tfds.load('{name}', data_dir='DIR')\". Received: data_dir={location!r}"
    )


def _load_tfds_ratings(
    name: str, variant: str, data_dir: str | None, download: bool
) -> tf.data.Dataset:
    """`tfds.load` of the single `train` split; fails fast and cleanly offline."""
    import tensorflow_datasets as tfds  # deferred: importing TFDS takes seconds

    location = data_dir or tfds.core.constants.DATA_DIR
    load = dict(split="train", data_dir=data_dir, shuffle_files=False)
    try:
        return tfds.load(name, download=False, **load)
    # AssertionError is how TFDS reports "not prepared"; OSError an
    # unreadable data_dir.
    except (AssertionError, OSError) as error:
        if not download:
            cause = "" if isinstance(error, AssertionError) else (
                f" ({type(error).__name__}: {error})")
            raise _unavailable(
                name, location, f"it is not prepared under data_dir and download=False{cause}"
            ) from error
    url = DOWNLOAD_URLS[variant]
    problem = _download_problem(url)
    if problem is not None:
        raise _unavailable(
            name, location, f"it is not prepared under data_dir, and {url} cannot be reached "
            f"to download it ({problem}; no network access?); nothing was written"
        )
    # TFDS leaves partial downloads and "incomplete" directories behind.
    roots = [os.path.join(location, "downloads"), os.path.join(location, name.split("/")[0])]
    existed = os.path.isdir(location)
    before = _paths_below(roots) if existed else set()
    try:
        return tfds.load(name, download=True, **load)
    except (OSError, AssertionError, tfds.download.DownloadError) as error:
        if existed:
            _remove_new_paths(roots, before)
        else:
            shutil.rmtree(location, ignore_errors=True)
        raise _unavailable(
            name, location, f"downloading and preparing it failed "
            f"({type(error).__name__}: {error}); the partial files were removed"
        ) from error


def _select_columns(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Raw columns of one TFDS example, plus its split key."""
    genres = example["movie_genres"]
    return {
        "user_id": example["user_id"],
        "movie_id": example["movie_id"],
        # Appending the "no genre" value makes [0] valid for empty lists too.
        "movie_genre": tf.concat([genres, tf.constant([_NO_GENRE], genres.dtype)], 0)[0],
        "user_age": example["bucketized_user_age"],
        "user_occupation": example["user_occupation_label"],
        "user_gender": example["user_gender"],
        "timestamp": example["timestamp"],
        "rating": example[RATING_FEATURE],
        "split_key": tf.strings.join(
            [example["user_id"], example["movie_id"], tf.strings.as_string(example["timestamp"])],
            separator="/",
        ),
    }


def _read_columns(dataset: tf.data.Dataset, name: str) -> dict[str, np.ndarray]:
    batches = list(
        dataset.map(_select_columns, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(_READ_BATCH_SIZE)
        .as_numpy_iterator()
    )
    if not batches:
        raise ValueError(f"The TFDS dataset has no ratings. Received: name={name!r}")
    return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


def _dense_columns(timestamps: np.ndarray) -> np.ndarray:
    """`[n, 3]` float64: timestamp, hour of day and weekday (UTC)."""
    timestamps = timestamps.astype(np.int64)
    hour_of_day = (timestamps // _SECONDS_PER_HOUR) % 24
    day_of_week = (timestamps // _SECONDS_PER_DAY + _EPOCH_WEEKDAY) % 7
    return np.stack([timestamps, hour_of_day, day_of_week], axis=1).astype(np.float64)


def load_movielens(
    variant: str = "100k",
    *,
    label: str = "binary",
    positive_rating: float = DEFAULT_POSITIVE_RATING,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> LoadedDataset:
    """Train and test examples of MovieLens 100k or 1M, held in memory.

    See the module docstring for the features, labels and split.  Memory:
    the 1M ratings take about 200 MB while reading, 70 MB as examples.

    Args:
        variant: `"100k"` or `"1m"`.
        label: `"binary"`: `rating >= positive_rating` as 0/1;
            `"rating"`: the rating as float32.
        positive_rating: Threshold of the binary label.
        test_fraction: Share of ratings in the test split.
        seed: Seed of the split and of the row order.
        max_train_examples: Cap on training rows (a seeded random subset);
            `None`: all.
        max_test_examples: Cap on test rows; `None`: all.
        data_dir: TFDS data directory; `None`: TFDS's default.
        download: Let TFDS download and prepare the data if missing.

    Returns:
        `LoadedDataset`, `item_field` = `"movie_id"`.

    Raises:
        MovieLensUnavailableError: If the data is neither prepared nor
            downloadable (e.g. no network).
        ValueError: If `variant`, `label`, `positive_rating` or a split
            argument is invalid.
    """
    name = _tfds_name(variant)
    if label not in LABEL_KINDS:
        raise ValueError(f"`label` must be one of {LABEL_KINDS}. Received: label={label!r}")
    require_in_range("positive_rating", positive_rating)
    split = SplitConfig(test_fraction, seed, max_train_examples, max_test_examples)
    data_dir = None if data_dir is None else os.fspath(data_dir)

    raw = _read_columns(_load_tfds_ratings(name, variant, data_dir, download), name)
    ratings = raw["rating"].astype(np.float32)
    columns = RawColumns(
        categorical={field: raw[field] for field in CATEGORICAL_FEATURE_NAMES},
        dense=_dense_columns(raw["timestamp"]),
        labels=(ratings >= positive_rating).astype(np.float32) if label == "binary" else ratings,
    )
    train_rows, test_rows = split.rows(raw["split_key"], source=name)
    train, test, feature_spec = encode_splits(
        columns,
        train_rows,
        test_rows,
        fit_encoder=lambda _, values: Vocabulary.fit(values),
        standardize=True,
    )
    return LoadedDataset(
        train, test, feature_spec, dense_names=DENSE_FEATURE_NAMES, item_field=ITEM_FIELD
    )
