"""Real data for the measurements: a Criteo click-log sample and MovieLens 100K.

Converts raw files you already have (it never downloads) into the two
layouts the main job reads, in `--output_dir`:

* `criteo_real.tsv`, for `--dataset=criteo:PATH`: the Criteo Kaggle layout
  (label, I1..I13, C1..C26, tab-separated, no header).  The inputs
  (`--criteo`, concatenated in the order given) may be that layout, plain
  or gzip, or a comma-separated file with a header naming `label`,
  `I1`..`I13`, `C1`..`C26` in any order (DeepCTR's and torch-rechub's
  samples), whose integer counts may be written as `5.0`.
* `movielens_100k_interactions.csv`, for `--dataset=csv:PATH`: the
  interaction log `user_id,item_id,timestamp,label` of MovieLens `u.data`
  (`--movielens`: user, item, rating, timestamp, tab-separated), with
  `label = rating >= --positive_rating` (default 4: "liked") and the rows
  sorted by timestamp (ties in file order), so that the file reads as a log
  in time order (the CSV loader's train/test split hashes line numbers, so
  the order does not change which rows are held out).

Each output is written atomically, readable by others as the umask allows,
and read back with the project's loader (`tf_smelu.data.read_criteo_file`,
which `load_criteo` uses, and `load_csv`) before its summary is printed;
the summary gives each raw file's MD5, to compare with the copies below.
A damaged input line stops the conversion with one line naming file and
line, and leaves no output behind.

Where the raw files come from
-----------------------------
Criteo: the full Kaggle Display Advertising Challenge data (45M rows) and
Criteo's 100,000-row `dac_sample.txt` (inside
https://labs.criteo.com/wp-content/uploads/2015/04/dac_sample.tar.gz, when
that page serves it) both fit `--criteo` as they are.  The sample the
project's measurements use is the largest real one found in public
repositories: the 8,000 rows of
https://github.com/Lapis-Hong/Wide-ResDNN at commit
9889f939deb904a35692e2efdc6ab4f743a7df71, files `data/criteo/train.csv`
(7,200 rows), `data/criteo/dev.csv` (409) and `data/criteo/test.csv`
(391): despite the suffix, tab-separated Kaggle rows (the first is line 1
of the Kaggle `train.txt`), 21.6% clicks.  Get them with

    git clone https://github.com/Lapis-Hong/Wide-ResDNN
    git -C Wide-ResDNN show 9889f93:data/criteo/train.csv > criteo_train.txt

(and likewise `dev.csv`, `test.csv`).  Copies of `dac_sample.txt` in
public repositories are larger than the repository store used here keeps
(4 MiB), hence the smaller sample.

MovieLens 100K: `u.data` of https://files.grouplens.org/datasets/movielens/ml-100k.zip
(100,000 ratings of 1,682 movies by 943 users, 1,979,173 bytes, MD5
6e47046882bad158b0efbb84cd5cb987).  The copy used is `ml-100k/u.data` of
https://github.com/Jiahui-Ruan/HDP at commit
7f67400b9c8aa9569999c10408d3e4603ffefc3c (the same bytes as GroupLens's).
Some course repositories ship a modified `u.data` (extra rows of a user 0,
or damaged fields): compare the MD5 the summary prints.

Usage:
  python benchmarks/real_data.py \\
      --criteo=raw/criteo_train.txt,raw/criteo_dev.txt,raw/criteo_test.txt \\
      --movielens=raw/u.data --output_dir=/work/data/real
  python examples/recsys_reproducibility.py --dataset=criteo:/work/data/real/criteo_real.tsv
  python examples/recsys_reproducibility.py \\
      --dataset=csv:/work/data/real/movielens_100k_interactions.csv
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence

from absl import app, flags

from tf_smelu import cli
from tf_smelu.common import atomic_write
from tf_smelu.data import load_csv, read_criteo_file
from tf_smelu.data.criteo import CATEGORICAL_FEATURE_NAMES, INTEGER_FEATURE_NAMES, NUM_COLUMNS
from tf_smelu.data.schema import parse_number
from tf_smelu.data.tabular import (
    DataFileError,
    RowProblem,
    SkippedRows,
    open_text,
    parse_binary_label,
    parse_rows,
    read_delimited,
    require_column_count,
)

FLAGS = flags.FLAGS
flags.DEFINE_list("criteo", [], "Raw Criteo files, concatenated in this order into "
                  "criteo_real.tsv: tab-separated Kaggle rows (plain or gzip), or comma-"
                  "separated with a header naming label, I1..I13, C1..C26.")
flags.DEFINE_string("movielens", None, "MovieLens u.data (user, item, rating, timestamp; "
                    "tab-separated), converted into movielens_100k_interactions.csv.")
flags.DEFINE_float("positive_rating", 4.0, "Ratings at or above this are label 1 in the "
                   "interaction CSV.")
flags.DEFINE_string("output_dir", "runs/real_data", "Where the converted files go.")

CRITEO_OUTPUT = "criteo_real.tsv"
INTERACTIONS_OUTPUT = "movielens_100k_interactions.csv"
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "label")
CRITEO_COLUMNS = ("label", *INTEGER_FEATURE_NAMES, *CATEGORICAL_FEATURE_NAMES)
_MOVIELENS_LAYOUT = "user, item, rating, timestamp, tab-separated"


# --------------------------------------------------------------------------
# Criteo
# --------------------------------------------------------------------------


def _delimiter(path: str) -> str:
    """Tab if the first non-blank line has one (Kaggle layout), else comma."""
    with open_text(path) as stream:
        for line in stream:
            if line.strip():
                return "\t" if "\t" in line else ","
    return "\t"


def _header_columns(path: str, fields: Sequence[str]) -> list[int] | None:
    """Positions of `CRITEO_COLUMNS` in a header row; `None` if `fields` is data.

    Raises:
        DataFileError: The header lacks some of the columns.
    """
    if fields[0].strip() in ("0", "1"):
        return None
    names = [field.strip().lower() for field in fields]
    missing = [name for name in CRITEO_COLUMNS if name.lower() not in names]
    if missing:
        raise DataFileError(f"{path}: the header lacks the Criteo column(s) "
                            f"{', '.join(missing)}; it needs label, I1..I13 and C1..C26")
    return [names.index(name.lower()) for name in CRITEO_COLUMNS]


def _count_text(text: str, name: str) -> str:
    """An integer count as Kaggle writes it: `5.0` -> `5`; empty stays empty."""
    text = text.strip()
    if not text:
        return ""
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer()):
        raise RowProblem(f"integer feature {name} is not an integer. Received: {name}={text!r}")
    return str(int(value))


def _criteo_row(fields: list[str], columns: Sequence[int], width: int) -> list[str]:
    """One Kaggle-layout row from the input columns at `columns`."""
    require_column_count(fields, width, "label, 13 integer and 26 categorical features")
    values = [fields[index] for index in columns]
    label = parse_binary_label(values[0].strip(), "label")
    counts = [_count_text(text, name)
              for text, name in zip(values[1:14], INTEGER_FEATURE_NAMES, strict=True)]
    categories = [text.strip() for text in values[14:]]
    for text, name in zip(categories, CATEGORICAL_FEATURE_NAMES, strict=True):
        if any(character in text for character in "\t\r\n"):
            raise RowProblem(f"categorical feature {name} holds a tab or line break, which "
                             f"the tab-separated output cannot. Received: {name}={text!r}")
    return [str(int(label)), *counts, *categories]


def criteo_rows(path: str) -> Iterator[list[str]]:
    """The rows of a raw Criteo file in the Kaggle layout, as 40 strings each.

    Args:
        path: Tab-separated Kaggle rows, or comma-separated with a header;
            plain or gzip.

    Raises:
        FileNotFoundError: `path` is no file.
        DataFileError: A header lacks a column; `MalformedRowError` (a
            `DataFileError`) names the file and line of a damaged row.
    """
    delimiter = _delimiter(path)
    rows = read_delimited(path, delimiter=delimiter, quoted=delimiter == ",")
    first = next(rows, None)
    if first is None:
        return
    columns = _header_columns(path, first[1])
    if columns is None:  # no header: the first row is data
        rows, columns, width = itertools.chain([first], rows), range(NUM_COLUMNS), NUM_COLUMNS
    else:
        width = len(first[1])
    parse = functools.partial(_criteo_row, columns=columns, width=width)
    for _, row in parse_rows(path, rows, parse, on_error="raise", skipped=SkippedRows(path)):
        yield row


def write_criteo(paths: Sequence[str], output: str) -> tuple[int, int]:
    """Writes the rows of `paths`, in order, as one Kaggle-layout TSV.

    Returns:
        Rows written and how many of them are clicks.

    Raises:
        DataFileError: As `criteo_rows`, or the inputs hold no row; nothing
            is written then.
    """
    rows = positives = 0
    with atomic_write(output) as stream:
        for path in paths:
            for row in criteo_rows(path):
                stream.write("\t".join(row) + "\n")
                rows += 1
                positives += row[0] == "1"
        if not rows:
            raise DataFileError(f"No Criteo rows in {', '.join(paths)}")
    return rows, positives


# --------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------


def _whole_number(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RowProblem(f"{name} is not a whole number. Received: {name}={text!r}") from None


def _rating(fields: list[str], positive_rating: float) -> tuple[int, int, int, int]:
    """`(timestamp, user, item, label)` of one `u.data` row."""
    require_column_count(fields, 4, _MOVIELENS_LAYOUT)
    user, item, rating, timestamp = (field.strip() for field in fields)
    value = parse_number(rating)
    if value is None or math.isnan(value):  # a missing rating would silently become 0
        raise RowProblem(f"rating is not a number. Received: rating={rating!r}")
    return (_whole_number(timestamp, "timestamp"), _whole_number(user, "user"),
            _whole_number(item, "item"), int(value >= positive_rating))


def interaction_rows(path: str, positive_rating: float) -> list[tuple[int, int, int, int]]:
    """`(user, item, timestamp, label)` of every rating in `u.data`, by timestamp.

    The sort is stable: ratings with the same timestamp keep their file order.

    Raises:
        FileNotFoundError: `path` is no file.
        MalformedRowError: A damaged row, naming file and line.
    """
    ratings = [rating for _, rating in parse_rows(
        path, read_delimited(path, delimiter="\t", quoted=False),
        functools.partial(_rating, positive_rating=positive_rating),
        on_error="raise", skipped=SkippedRows(path))]
    ratings.sort(key=lambda rating: rating[0])
    return [(user, item, timestamp, label) for timestamp, user, item, label in ratings]


def write_interactions(path: str, output: str, positive_rating: float) -> tuple[int, int]:
    """Writes `u.data` as the CSV `user_id,item_id,timestamp,label`, by timestamp.

    Returns:
        Rows written and how many are label 1.

    Raises:
        DataFileError: As `interaction_rows`, or `path` holds no row;
            nothing is written then.
    """
    rows = interaction_rows(path, positive_rating)
    if not rows:
        raise DataFileError(f"No ratings in {path}")
    with atomic_write(output) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(INTERACTION_COLUMNS)
        writer.writerows(rows)
    return len(rows), sum(row[3] for row in rows)


# --------------------------------------------------------------------------
# The program
# --------------------------------------------------------------------------


def md5(path: str) -> str:
    """The MD5 of a file's bytes, to compare a raw file with its documented copy."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _share(path: str) -> None:
    """Gives `path` the permissions of a new file (`atomic_write` creates it private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _require_read_back(output: str, written: int, loaded: Iterable[int]) -> None:
    """Raises `DataFileError` unless the project's loader read every row written."""
    read = sum(loaded)
    if read != written:
        raise DataFileError(f"{output}: {written:,} rows written but the loader read {read:,}")


def _summary(output: str, rows: int, positives: int, sources: Sequence[str]) -> str:
    inputs = ", ".join(f"{path} (md5 {md5(path)})" for path in sources)
    return (f"wrote {output}: {rows:,} rows, positive rate {positives / rows:.4f}, "
            f"from {inputs}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.criteo and FLAGS.movielens is None:
        raise app.UsageError("Nothing to convert: give --criteo=FILE[,FILE...] and/or "
                             "--movielens=u.data (see --help for where to get them)")
    cli.check_output_dir(FLAGS.output_dir)
    if FLAGS.criteo:
        output = os.path.join(FLAGS.output_dir, CRITEO_OUTPUT)
        rows, positives = write_criteo(FLAGS.criteo, output)
        _share(output)
        # streamed, so that a full-size Kaggle file is checked without holding it
        _require_read_back(output, rows, (len(chunk.labels) for chunk in read_criteo_file(output)))
        print(_summary(output, rows, positives, FLAGS.criteo), flush=True)
    if FLAGS.movielens is not None:
        output = os.path.join(FLAGS.output_dir, INTERACTIONS_OUTPUT)
        rows, positives = write_interactions(FLAGS.movielens, output, FLAGS.positive_rating)
        _share(output)
        data = load_csv(output)
        _require_read_back(output, rows, (len(data.train), len(data.test)))
        print(_summary(output, rows, positives, [FLAGS.movielens]), flush=True)


if __name__ == "__main__":
    cli.run(main)
