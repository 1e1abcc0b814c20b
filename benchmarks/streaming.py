"""Streaming a TFRecord set larger than memory: rows/s and peak RSS vs data size.

Writes a Criteo-like TFRecord set (13 float features, 26 bytes features, a
0/1 label; about 1 KB a record) of the largest size asked in a
temporary directory, in files of `--file_mb`, then streams the first files
adding up to each size through `tf_smelu.data.stream_tfrecords` (seeded file
order, shuffle buffer, batches in the models' layout), each size in a fresh
process.  Prints, per size, the rows, rows/s of the stream (after fitting
the encoding on `--sample_records` records) and the process's peak RSS. The
files are deleted at the end, also after an error or Ctrl-C.

Usage:
  python benchmarks/streaming.py                   # 0.25-2 GB, about 5 minutes
  python benchmarks/streaming.py --sizes_gb=0.01,0.02 --file_mb=5  # smoke test
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from tf_smelu import cli
from tf_smelu.processes import peak_rss

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes_gb", ["0.25", "0.5", "1", "2"], "Data sizes to stream, in GB.")
flags.DEFINE_integer("file_mb", 128, "Size of each TFRecord file, in MB.", lower_bound=1)
flags.DEFINE_integer("batch_size", 1024, "Records per batch.", lower_bound=1)
flags.DEFINE_integer("shuffle_buffer", 10_000, "Records in the shuffle buffer.", lower_bound=1)
flags.DEFINE_integer("sample_records", 100_000, "Records the encoding is fitted on.",
                     lower_bound=1)
flags.DEFINE_string("directory", None, "Where to write the data (default: a temporary "
                    "directory); it is deleted afterwards.")
flags.DEFINE_string("measure", None, "Internal: stream this pattern and print one JSON line.")

_DENSE, _CATEGORICAL, _POOL = 13, 26, 16_384
_GB = 1024**3


def _record_pool(seed: int = 0) -> list[bytes]:
    """`_POOL` distinct serialized `tf.train.Example`s (Zipf-like ids)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(_POOL):
        feature = {"label": tf.train.Feature(int64_list=tf.train.Int64List(
            value=[int(rng.random() < 0.25)]))}
        for column in range(_DENSE):
            feature[f"I{column + 1}"] = tf.train.Feature(float_list=tf.train.FloatList(
                value=[float(rng.lognormal())]))
        for column in range(_CATEGORICAL):
            value = b"%08x" % min(int(rng.zipf(1.3)), 10**6)
            feature[f"C{column + 1}"] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[value * 2]))
        pool.append(tf.train.Example(features=tf.train.Features(feature=feature))
                    .SerializeToString())
    return pool


def _write_files(directory: str, total_bytes: int, file_bytes: int) -> list[tuple[str, int]]:
    """Writes files until `total_bytes`; returns `(path, records)` per file."""
    import tensorflow as tf

    pool = _record_pool()
    files, written, index = [], 0, 0
    while written < total_bytes:
        path = os.path.join(directory, f"part-{len(files):04d}.tfrecord")
        records = 0
        with tf.io.TFRecordWriter(path) as writer:
            while records == 0 or os.path.getsize(path) < file_bytes:
                for _ in range(4096):
                    writer.write(pool[index % _POOL])
                    index += 1
                    records += 1
                writer.flush()
        written += os.path.getsize(path)
        files.append((path, records))
    return files


def _measure(pattern: str) -> None:
    """Child process: streams `pattern` once and prints rows, seconds and peak RSS."""
    from tf_smelu.data import fit_tfrecord_encoding, stream_tfrecords

    start = time.perf_counter()
    encoding = fit_tfrecord_encoding(pattern, sample_records=FLAGS.sample_records)
    fitted = time.perf_counter()
    dataset = stream_tfrecords(pattern, encoding, batch_size=FLAGS.batch_size, order_seed=1,
                               shuffle_buffer=FLAGS.shuffle_buffer)
    rows = sum(int(labels.shape[0]) for _, labels in dataset)
    done = time.perf_counter()
    print(json.dumps({"rows": rows, "fit_seconds": fitted - start,
                      "stream_seconds": done - fitted,
                      "peak_rss_mb": peak_rss() / 2**20}))


def _stream_in_a_new_process(paths: list[str]) -> dict:
    # A pattern that matches exactly these files: a directory of links to them.
    link_dir = tempfile.mkdtemp(dir=os.path.dirname(paths[0]), prefix="subset-")
    for path in paths:
        os.symlink(path, os.path.join(link_dir, os.path.basename(path)))
    result = subprocess.run(
        [sys.executable, __file__, f"--measure={link_dir}/*.tfrecord",
         f"--batch_size={FLAGS.batch_size}", f"--shuffle_buffer={FLAGS.shuffle_buffer}",
         f"--sample_records={FLAGS.sample_records}"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    shutil.rmtree(link_dir)
    if result.returncode:
        raise RuntimeError(f"the streaming process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.measure:
        _measure(FLAGS.measure)
        return
    sizes = sorted(float(size) for size in FLAGS.sizes_gb)
    if not sizes or sizes[0] <= 0:
        raise app.UsageError(f"--sizes_gb must be positive numbers. Received: {FLAGS.sizes_gb}")
    directory = tempfile.mkdtemp(dir=FLAGS.directory, prefix="tf_smelu_streaming-")
    try:
        started = time.perf_counter()
        files = _write_files(directory, int(sizes[-1] * _GB), FLAGS.file_mb * 2**20)
        print(f"wrote {len(files)} files, {sum(os.path.getsize(p) for p, _ in files) / _GB:.2f}"
              f" GB, {sum(r for _, r in files):,} records in "
              f"{time.perf_counter() - started:.0f} s")
        print(f"{'data GB':>8} {'files':>6} {'rows':>12} {'rows/s':>10} {'peak RSS MB':>12}")
        for size in sizes:
            chosen, total = [], 0
            for path, _ in files:
                if total >= size * _GB:
                    break
                chosen.append(path)
                total += os.path.getsize(path)
            measured = _stream_in_a_new_process(chosen)
            print(f"{total / _GB:8.2f} {len(chosen):6d} {measured['rows']:12,d} "
                  f"{measured['rows'] / measured['stream_seconds']:10,.0f} "
                  f"{measured['peak_rss_mb']:12,.0f}", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)  # the command-line error style: one `error:` line for a bad flag
