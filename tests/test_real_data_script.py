"""benchmarks/real_data.py: raw Criteo and MovieLens files into what the main job reads.

Tiny raw files written here stand in for the real ones: Kaggle-layout and
headed comma-separated Criteo rows become one Kaggle TSV that
`read_criteo_file` reads row for row; `u.data` becomes the interaction CSV
`user_id,item_id,timestamp,label` in time order that `load_csv` reads; a
damaged line stops with its file and line and leaves no output.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_smelu.data import load_csv, read_criteo_file
from tf_smelu.data.tabular import MalformedRowError

REPO = pathlib.Path(__file__).resolve().parent.parent

# Kaggle rows: label, I1..I13 (empty, negative, zero), C1..C26 (hex, empty).
KAGGLE_ROWS = [
    ["0", "1", "", "5", "-1", *["0"] * 9, *[f"{c:08x}" for c in range(26)]],
    ["1", *[str(i * 7) for i in range(13)], "", *[f"{c + 99:08x}" for c in range(25)]],
    ["0", *[""] * 13, *[f"{c * 3:08x}" for c in range(26)]],
]
HEADER = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


@pytest.fixture(scope="module")
def real_data():
    """The script as a module (its flags are defined once per test process)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("real_data")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def write_kaggle(path, rows, compress=False):
    text = "".join("\t".join(row) + "\n" for row in rows)
    if compress:
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return str(path)


def write_headed_csv(path, rows):
    """DeepCTR's layout: a header, columns in another order, counts as `5.0`."""
    order = [*range(14, 40), *range(14)]  # C1..C26 first, then label, I1..I13
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow([HEADER[i] for i in order])
        for row in rows:
            as_floats = [row[0], *(f"{int(t)}.0" if t else "" for t in row[1:14]), *row[14:]]
            writer.writerow([as_floats[i] for i in order])
    return str(path)


def test_kaggle_and_headed_csv_files_become_one_tsv_the_criteo_loader_reads(real_data, tmp_path):
    sources = [write_kaggle(tmp_path / "a.txt", KAGGLE_ROWS[:2], compress=True),
               write_headed_csv(tmp_path / "b.csv", KAGGLE_ROWS[::-1])]
    output = str(tmp_path / "out" / "criteo.tsv")

    rows, positives = real_data.write_criteo(sources, output)

    expected = [*KAGGLE_ROWS[:2], *KAGGLE_ROWS[::-1]]
    assert (rows, positives) == (5, 2)
    assert pathlib.Path(output).read_text() == "".join("\t".join(r) + "\n" for r in expected)
    (chunk,) = read_criteo_file(output)
    np.testing.assert_array_equal(chunk.labels, [float(r[0]) for r in expected])
    assert chunk.dense[0, 2] == pytest.approx(np.log1p(5))  # I3 of the first row


def write_u_data(path, count=60, seed=0):
    """Ratings in random time order, some sharing a timestamp."""
    rng = np.random.default_rng(seed)
    rows = [(int(rng.integers(1, 9)), int(rng.integers(1, 30)), int(rng.integers(1, 6)),
             880_000_000 + int(rng.integers(0, 40))) for _ in range(count)]
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))
    return str(path), rows


def test_u_data_becomes_interactions_in_time_order_that_the_csv_loader_reads(
        real_data, tmp_path):
    source, ratings = write_u_data(tmp_path / "u.data")
    output = str(tmp_path / "interactions.csv")

    rows, positives = real_data.write_interactions(source, output, positive_rating=4)

    by_time = sorted(ratings, key=lambda r: r[3])  # stable: ties keep file order
    expected = [["user_id", "item_id", "timestamp", "label"],
                *([str(u), str(i), str(t), str(int(r >= 4))] for u, i, r, t in by_time)]
    with open(output, newline="") as stream:
        assert list(csv.reader(stream)) == expected
    assert (rows, positives) == (len(ratings), sum(r[2] >= 4 for r in ratings))
    data = load_csv(output)
    assert len(data.train) + len(data.test) == len(ratings)
    assert data.item_field == "item_id"


@pytest.mark.parametrize("kind,line,problem", [
    ("kaggle", 3, "integer feature I4 is not an integer"),
    ("headed", 5, "expected 40 columns"),
    ("movielens", 2, "rating is not a number"),
])
def test_a_damaged_line_names_its_file_and_line_and_leaves_no_output(
        real_data, tmp_path, kind, line, problem):
    output = tmp_path / "out.txt"
    if kind == "movielens":
        path = tmp_path / "u.data"
        path.write_text("1\t2\t5\t880000000\n1\t3\t\t880000001\n")  # a rating lost
        convert = lambda: real_data.write_interactions(str(path), str(output), 4)  # noqa: E731
    else:
        damaged = [*KAGGLE_ROWS[:1], [*KAGGLE_ROWS[1][:4], "4.5", *KAGGLE_ROWS[1][5:]]]
        if kind == "kaggle":
            path = pathlib.Path(write_kaggle(tmp_path / "d.txt", [KAGGLE_ROWS[0], *damaged]))
        else:
            path = pathlib.Path(write_headed_csv(tmp_path / "d.csv", KAGGLE_ROWS))
            path.write_text(path.read_text() + '"x",1\n')  # line 5: header and 3 rows before
        convert = lambda: real_data.write_criteo([str(path)], str(output))  # noqa: E731

    with pytest.raises(MalformedRowError, match=problem) as raised:
        convert()

    assert (raised.value.path, raised.value.line_number) == (str(path), line)
    assert os.listdir(tmp_path) == [path.name]  # neither the output nor its temporary file


@pytest.mark.slow  # a subprocess importing TensorFlow
def test_the_command_line_reports_a_damaged_file_in_one_line(tmp_path):
    damaged = write_kaggle(tmp_path / "d.txt", [KAGGLE_ROWS[0], ["2", *KAGGLE_ROWS[0][1:]]])
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "real_data.py"), f"--criteo={damaged}",
         f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Malformed row in {damaged} at line 2: label column 'label' "
                      "must be 0 or 1. Received: label='2'"], result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "out").glob("*"))  # no output, no temporary file
