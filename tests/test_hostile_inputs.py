"""Hostile input: every mistake a user can make ends in one clear line, nothing lost.

Fast tests run the library's checks in process; tests marked `slow` run the
command lines (main job, worker, launcher) as a user would and check the
exit code, that stderr's last line names the mistake, and that no Python
traceback is shown (unless `--debug`). Add a case here for every bug found.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
from absl import app

from tf_smelu import cli, experiment
from tf_smelu.common import UserError, run_program
from tf_smelu.experiment import CTRExperimentConfig, ResultsMismatchError, finished_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = os.path.join(REPO, "examples", "recsys_reproducibility.py")
TINY = ["--quick", "--train_examples=600", "--eval_examples=300", "--replicas=2",
        "--hidden_units=8", "--noprogress"]


# --------------------------------------------------------------------------
# In process: configuration, output directory, results.json.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"activations": []}, "at least one activation"),
        ({"activations": ["relu", "smelu:nan"]}, "finite"),
        ({"activations": ["relu", "smelu:-1"]}, "> 0"),
        ({"activations": ["relu", "swishy"]}, "swishy"),
        ({"sources": []}, "at least one source set"),
        ({"sources": ["tower_init+bogus"]}, "bogus"),
        ({"replicas": 1}, "replicas"),
        ({"learning_rate": math.inf}, "learning_rate"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"hidden_units": ["64", "x"]}, "hidden_units"),
        ({"dataset": "nosuchkind"}, "nosuchkind"),
        ({"dataset": "csv:"}, "path"),
        ({"workers": 3, "batch_size": 512}, "multiple of the number of workers"),
        ({"workers": 2, "sources": ["stale"]}, "in-process harness"),
        ({"max_auc_loss": -0.001}, "max_auc_loss"),
        ({"max_auc_loss": math.nan}, "max_auc_loss"),
        ({"max_auc_loss": 0.002, "workers": 2}, "in process only"),
        ({"max_auc_loss": 0.002, "replicas": 3}, "replicas"),
        ({"max_auc_loss": 0.002, "replicas": 16, "max_replicas": 8}, "max_replicas"),
        ({"time_budget": 0.0}, "time_budget"),
        ({"time_budget": 60.0}, "limits the `max_auc_loss` search only"),
        ({"beta_scale": "relative", "workers": 2}, "in process"),
        ({"beta_scale": "relatif"}, "beta_scale"),
    ],
)
def test_a_bad_configuration_is_one_usage_line(values, message):
    with pytest.raises(app.UsageError, match=message) as raised:
        cli.experiment_config(values)
    assert "\n" not in str(raised.value)


def test_output_dir_checks_happen_without_creating_anything(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(app.UsageError, match="is a file"):
        cli.check_output_dir(str(a_file))
    with pytest.raises(app.UsageError, match="is a file, not a directory"):
        cli.check_output_dir(str(a_file / "below"))
    cli.check_output_dir(str(tmp_path / "new" / "deeper"))
    assert not (tmp_path / "new").exists()


def test_an_unwritable_output_dir_is_refused(tmp_path, monkeypatch):
    # Permission bits do not stop root (CI), so the permission check is faked.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(app.UsageError, match="not writable"):
        cli.check_output_dir(str(tmp_path / "out"))


def _row(label="relu", sources=("tower_init",), rel_pd=0.05):
    return {"activation": label, "beta": None, "label": label, "sources": list(sources),
            "replicas": 2, "auc_mean": 0.7, "auc_std": 0.0, "aucs": [0.7, 0.7],
            "logloss_mean": 0.5, "abs_pd": 0.01, "rel_pd": rel_pd,
            "rel_pd_ci": [math.nan, math.nan], "train_seconds": 1.0}


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "cannot be read"),
        ('{"config": {}, "results": [', "cannot be read"),
        (b"\xff\xfe\x00garbage", "cannot be read"),
        ("[1, 2]", "not a tf_smelu results file"),
        ('{"config": {}, "results": [{"label": "relu"}]}', "not a tf_smelu results file"),
        ('{"results": []}', "not a tf_smelu results file"),
    ],
)
def test_a_damaged_results_file_is_never_silently_replaced(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ResultsMismatchError, match=message) as raised:
        finished_rows(str(tmp_path), {"replicas": 2})
    assert str(path) in str(raised.value) and "--noresume" in str(raised.value)
    assert finished_rows(str(tmp_path), {"replicas": 2}, resume=False) == []
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_results_of_another_configuration_name_the_differences(tmp_path):
    config = CTRExperimentConfig().to_dict()
    experiment.write_results(str(tmp_path), config, [_row()], complete=False)
    other = {**config, "replicas": 4, "learning_rate": 0.003}
    with pytest.raises(ResultsMismatchError) as raised:
        finished_rows(str(tmp_path), other)
    message = str(raised.value)
    assert "replicas: 8 -> 4" in message and "learning_rate: 0.01 -> 0.003" in message
    # Which rows run is not a mismatch: rows are matched by sources and activation.
    reused = finished_rows(str(tmp_path), {**config, "activations": ["relu", "gelu"],
                                           "progress": False})
    assert [experiment.row_key(r) for r in reused] == [("tower_init", "relu")]
    assert math.isnan(reused[0]["rel_pd_ci"][0])
    assert reused[0]["beta"] is None


def test_run_program_prints_one_line_and_exits_1(capsys):
    def main(argv):
        raise UserError("data.csv:3: a bad row")

    with pytest.raises(SystemExit) as exited:
        run_program(main, argv=["prog"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == "error: data.csv:3: a bad row"


def test_run_program_reports_ctrl_c_with_exit_code_130(capsys):
    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        run_program(main, argv=["prog"])
    assert exited.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_run_program_keeps_the_traceback_of_a_bug():
    def main(argv):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_program(main, argv=["prog"])


# --------------------------------------------------------------------------
# Command lines, as a user runs them.
# --------------------------------------------------------------------------


def _run(args, timeout=300, **popen):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, **popen)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="module")
def damaged_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "a_file").write_text("not a directory")
    (root / "binary.csv").write_bytes(b"\x00\xff\x13garbage\x00" * 50)
    (root / "short_row.csv").write_text("user_id,item_id,label\n1,2,1\n3,4\n")
    (root / "label_word.csv").write_text("user,item,label\nu1,i1,1\nu2,i2,yes\n")
    return root


MAIN_JOB_CASES = {
    "unknown flag": (["--replica=3"], ["replica"]),
    "replicas below 2": (["--replicas=1"], ["replicas"]),
    "non-finite beta": (["--activations=relu,smelu:inf"], ["smelu:inf"]),
    "empty activations": (["--activations="], ["activation"]),
    "unknown activation later in the list": (["--activations=relu,gelu,smeluu"], ["smeluu"]),
    "nan learning rate": (["--learning_rate=nan"], ["learning_rate"]),
    "output dir is a file": (["--output_dir={root}/a_file"], ["a_file", "not a directory"]),
    "output dir below a file": (["--output_dir={root}/a_file/out"], ["a_file"]),
    "missing data file": (["--dataset=csv:{root}/missing.csv"], ["missing.csv"]),
    "binary data file": (["--dataset=csv:{root}/binary.csv"], ["binary.csv"]),
    "short csv row": (["--dataset=csv:{root}/short_row.csv"], ["short_row.csv", "3"]),
    "word where the label should be": (["--dataset=csv:{root}/label_word.csv"],
                                       ["label_word.csv", "3"]),
    "stray argument": (["oops"], ["oops"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(MAIN_JOB_CASES))
def test_main_job_mistakes_end_in_one_line(case, damaged_files, tmp_path):
    args, fragments = MAIN_JOB_CASES[case]
    args = [a.format(root=damaged_files) for a in args]
    if not any(a.startswith("--output_dir") for a in args):
        args.append(f"--output_dir={tmp_path / 'out'}")
    result = _run([MAIN_JOB, *TINY, *args])
    _assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback(damaged_files, tmp_path):
    result = _run([MAIN_JOB, *TINY, f"--dataset=csv:{damaged_files}/missing.csv",
                   f"--output_dir={tmp_path}", "--debug"])
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_finished_rows_and_a_rerun_trains_only_the_rest(tmp_path, validate_results):
    args = [MAIN_JOB, *TINY, "--train_examples=40000", "--activations=relu,smelu:0.2",
            f"--output_dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        # A background job may inherit an ignored SIGINT; a user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stdout:
            if line.startswith("tower_init") and " relu " in line:
                process.send_signal(signal.SIGINT)
                break
        output = process.communicate(timeout=300)[0]
    finally:
        process.kill()
    assert process.returncode == 130, output[-2000:]
    assert "Traceback" not in output and "interrupted" in output
    content = validate_results(tmp_path / "results.json")
    assert content["complete"] is False
    assert [r["label"] for r in content["results"]] == ["relu"]

    rerun = _run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming: 1 finished row" in rerun.stdout
    content = validate_results(tmp_path / "results.json")
    assert content["complete"] is True
    assert [r["label"] for r in content["results"]] == ["relu", "smelu(β=0.2)"]
    assert content["results"][0] == json.loads(json.dumps(content["results"][0]))

    changed = _run([*args, "--learning_rate=0.003"])
    _assert_one_line_error(changed, "learning_rate: 0.01 -> 0.003")


WORKER_CASES = {
    "unknown activation": (["--activation=smelux"], ["smelux"]),
    "non-finite learning rate": (["--learning_rate=inf"], ["learning_rate"]),
    "missing data file": (["--dataset=csv:/nonexistent/data.csv"], ["data.csv"]),
    "stray argument": (["oops"], ["oops"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(WORKER_CASES))
def test_worker_mistakes_end_in_one_line(case, tmp_path):
    args, fragments = WORKER_CASES[case]
    result = _run(["-m", "tf_smelu.training.distributed", "--steps=2", "--train_examples=256",
                   "--eval_examples=64", "--hidden_units=8", f"--output={tmp_path}/w", *args])
    _assert_one_line_error(result, *fragments)


@pytest.mark.slow
def test_launcher_without_a_command_ends_in_one_line():
    result = _run(["-m", "tf_smelu.training.launcher", "--num_workers=2"], timeout=120)
    _assert_one_line_error(result, "command after `--`")


# ---- data (issue 20) ----
# A careful user's data: spreadsheet column names, a model of the id columns only, a cut
# TFRecord file, the default label named among the features.


@pytest.fixture(scope="module")
def spreadsheet_export(tmp_path_factory):
    """A UTF-8 CSV with a byte-order mark, names no identifier rule allows and no number
    column, and a model (`ids_model:build`) that takes only the two id columns."""
    root = tmp_path_factory.mktemp("spreadsheet")
    lines = ["user name,usuário,label", *[
        f"ana {i % 13},loja {(i * 5) % 9},{int(i % 4 == 0)}" for i in range(800)]]
    (root / "export.csv").write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))
    (root / "ids_model.py").write_text(
        "import keras\n\n\n"
        "def build(feature_spec):\n"
        "    inputs = {f.name: keras.Input(shape=(), dtype='int64', name=f.name)\n"
        "              for f in feature_spec.categorical}\n"
        "    embedded = [keras.layers.Embedding(f.vocab_size, 4)(inputs[f.name])\n"
        "                for f in feature_spec.categorical]\n"
        "    hidden = keras.layers.Dense(8, activation='relu')(\n"
        "        keras.layers.Concatenate()(embedded))\n"
        "    return keras.Model(inputs, keras.layers.Dense(1)(hidden))\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_a_spreadsheet_export_trains_a_model_of_its_id_columns(spreadsheet_export, tmp_path,
                                                               validate_results, monkeypatch):
    """BOM, `user name`, `usuário`, no number column, a model of the ids only: it runs."""
    output = tmp_path / "out"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(spreadsheet_export), os.environ.get("PYTHONPATH")])))
    result = _run([MAIN_JOB, *TINY, f"--dataset=csv:{spreadsheet_export}/export.csv",
                   "--model=ids_model:build", f"--output_dir={output}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "label: label, 0/1 (label_column default" in result.stdout  # no BOM in the name
    assert "user name (input user_name; inferred: text" in result.stdout
    assert "usuário (input usuario; inferred: text" in result.stdout
    ignored = [line for line in result.stderr.splitlines() if "it ignores" in line]
    assert len(ignored) == 1 and ignored[0].endswith(
        "Your model ids_model:build takes 2 of the data's 3 features; it ignores dense."), ignored
    content = validate_results(output / "results.json")
    schema = content["data"]["schema"]
    assert schema["categorical_columns"] == ["user name", "usuário"]
    assert schema["feature_keys"] == {"user name": "user_name", "usuário": "usuario"}
    assert all(math.isfinite(row["auc_mean"]) for row in content["results"])


def _tfrecord_cut_in_a_header(root) -> str:
    import tensorflow as tf

    path = os.path.join(root, "cut.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(600):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "user": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 9])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2])),
            })).SerializeToString())
    with open(path, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:  # 300 whole records, then 5 bytes of a header
        stream.write(data[: 300 * (len(data) // 600) + 5])
    return path


DATA_CASES = {
    "a plain TFRecord cut inside a record header": (
        lambda root: [f"--dataset=tfrecord:{_tfrecord_cut_in_a_header(root)}"],
        ["cut.tfrecord", "record index 300", "byte offset"]),
    "the default label among the features": (
        lambda root: [f"--dataset=csv:{root}/export.csv", "--categorical_columns=user,label"],
        ["'label' (the default label; set --label_column to another) cannot also be a feature"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_mistakes_end_in_one_line_before_training(case, spreadsheet_export, tmp_path):
    make_args, fragments = DATA_CASES[case]
    result = _run([MAIN_JOB, *TINY, *make_args(tmp_path if "TFRecord" in case
                                               else spreadsheet_export),
                   f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out" / "results.json").exists()
# ---- reproducibility: ReplicaStudy and PredictionDifferenceCallback (issue 21) ----


def _study_inputs(rows: int = 300):
    """`(train dataset, held-out tuple, build_model)` of a tiny compiled click model."""
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")

    def build_model(seed, compiled=True, output_activation="sigmoid"):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation=output_activation)])
        if compiled:
            model.compile("adam", "binary_crossentropy")
        return model

    train = tf.data.Dataset.from_tensor_slices((x[:200], y[:200])).batch(50)
    return train, (x[200:], y[200:]), build_model


@pytest.mark.parametrize("arguments, message", [
    ({"replicas": 1}, "`replicas` must be an integer >= 2. Received: replicas=1"),
    ({"replicas": "3"}, "Received: replicas='3'"),
    ({"sources": ("init", "stale")}, r"Unknown source\(s\) \['stale'\].*Received: sources="),
    ({"sources": "init"}, "must be a tuple of source names"),
    ({"epoch": 2}, r"does not take \['epoch'\].*Received: epoch=2"),
    ({"x": [1]}, r"does not take \['x'\]"),
    ({"sources": ("order",), "shuffle_buffer": 0}, "Received: shuffle_buffer=0"),
])
def test_replica_study_arguments_are_checked_when_it_is_made(arguments, message):
    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out, build_model = _study_inputs()
    with pytest.raises(ValueError, match=message):
        ReplicaStudy(build_model, train, held_out, **arguments)


def test_replica_study_data_mistakes_are_named():
    import numpy as np
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out, build_model = _study_inputs()
    unknown = train.filter(lambda x, y: True)  # cardinality unknown
    with pytest.raises(ValueError, match="cardinality is unknown: pass `shuffle_buffer=<elements>`"):
        ReplicaStudy(build_model, unknown, held_out, sources=("order",))
    with pytest.raises(ValueError, match="cardinality is infinite"):
        ReplicaStudy(build_model, train.repeat(), held_out, sources=("order",))
    with pytest.raises(ValueError, match="`train_data` must be a tf.data.Dataset.*Received: tuple"):
        ReplicaStudy(build_model, held_out, held_out)
    single = tf.data.Dataset.from_tensor_slices(held_out)
    with pytest.raises(ValueError, match="`held_out` must be batched"):
        ReplicaStudy(build_model, train, single)
    with pytest.raises(ValueError, match=r"`held_out` must .*\(features, labels\).*Received: ndarray"):
        ReplicaStudy(build_model, train, np.zeros((4, 4)))


def test_replica_study_model_mistakes_stop_before_the_first_training_step():
    import keras

    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out, build_model = _study_inputs()
    steps = []
    counting = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: steps.append(1))
    cases = [
        (lambda seed: build_model(seed, compiled=False), "must return a compiled model"),
        (lambda seed: "a model", r"must return a keras.Model. Received: str"),
        (lambda seed: build_model(seed, output_activation=None), "pass `from_logits=True`"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            ReplicaStudy(build, train, held_out, callbacks=[counting]).run()
    assert steps == []
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    plain.compile("adam", "binary_crossentropy")
    with pytest.raises(ValueError, match="has none"):
        ReplicaStudy(lambda seed: plain, train, held_out, callbacks=[counting]).compare(["gelu"])
    assert steps == []


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_replica_study_refuses_data_that_can_be_read_only_once():
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out, build_model = _study_inputs()
    def read_once():
        batches = iter(list(train.as_numpy_iterator()))  # one pass, then exhausted
        return tf.data.Dataset.from_generator(lambda: batches, output_signature=train.element_spec)

    # Order pinned: refused when the study is made (the second read starts elsewhere).
    with pytest.raises(ValueError, match="another first batch.*read only once"):
        ReplicaStudy(build_model, read_once(), held_out)
    # Order varied: the second replica gets fewer steps, before it is used.
    with pytest.raises(ValueError, match="replica 0 .* steps but replica 1 .*iterated only once"):
        ReplicaStudy(build_model, read_once(), held_out, sources=("order",),
                     shuffle_buffer=4).run()


def test_replica_study_refuses_a_self_reshuffling_dataset_when_the_order_is_pinned():
    from tf_smelu.reproducibility import ReplicaStudy

    train, held_out, build_model = _study_inputs()
    reshuffling = train.unbatch().shuffle(200, reshuffle_each_iteration=True).batch(50)
    with pytest.raises(ValueError, match="reshuffles itself.*Received: sources=\\('init',\\)"):
        ReplicaStudy(build_model, reshuffling, held_out)
    ReplicaStudy(build_model, reshuffling, held_out, sources=("order",), shuffle_buffer=4)


def test_churn_callback_mistakes_stop_fit_before_the_first_step(tmp_path):
    import keras
    import numpy as np

    from tf_smelu.reproducibility import PredictionDifferenceCallback

    _, (x, y), build_model = _study_inputs()
    steps = []
    counting = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *_: steps.append(1))
    cases = [
        (tmp_path / "missing.keras", "does not exist. Received: reference="),
        (np.full((len(x), 2), 0.5), r"do not match the model's.*\(100, 2\).*\(100,\)"),
        (np.full(len(x), 3.0), r"outside \[0, 1\].*Received: values in \[3, 3\]"),
    ]
    for reference, message in cases:
        with pytest.raises(ValueError, match=message):
            build_model(0).fit(x, y, verbose=0, callbacks=[
                PredictionDifferenceCallback(reference, x), counting])
    assert steps == []


def test_replica_study_refuses_empty_training_data():
    import numpy as np
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    _, held_out, build_model = _study_inputs()
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 4), "float32"), np.zeros(0))).batch(5)
    with pytest.raises(ValueError, match="`train_data` is empty"):
        ReplicaStudy(build_model, empty, held_out)
    with pytest.raises(ValueError, match="Replica 0 trained no step"):
        ReplicaStudy(build_model, empty, held_out, sources=("order",), shuffle_buffer=4).run()


def test_replica_study_held_out_labels_must_name_every_output():
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    x = np.random.default_rng(0).normal(size=(120, 4)).astype("float32")
    labels = {"click": (x[:, 0] > 0).astype("float32"), "like": (x[:, 1] > 0).astype("float32")}

    def build(seed):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(4, activation="relu")(inputs)
        model = keras.Model(inputs, {name: keras.layers.Dense(1, "sigmoid", name=name)(hidden)
                                     for name in labels})
        model.compile("adam", "binary_crossentropy")
        return model

    train = tf.data.Dataset.from_tensor_slices((x, labels)).batch(40)
    with pytest.raises(ValueError, match=r"no output\(s\) \['like'\].*Received: labels for \['click'\]"):
        ReplicaStudy(build, train, (x, {"click": labels["click"]})).run()
# ---- training guards, results files, API edges, progress output (issue 20) ----


def _guards_values(**changes):
    """Flag values of a tiny in-process run (as `cli.run_experiment` takes them)."""
    return {"activations": ["relu"], "sources": ["tower_init"], "replicas": 2,
            "train_examples": 600, "eval_examples": 300, "hidden_units": ["8"],
            "progress": False, **changes}


def _write_finished_run(output_dir, values):
    """results.json of a finished row of `values`' run (predictions made up: no training)."""
    import numpy as np

    from tf_smelu.registry import Activation

    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(np.float64)
    probabilities = np.clip(0.3 + 0.1 * rng.standard_normal((2, 300)), 0.01, 0.99)
    row = experiment.summarize_predictions(Activation.parse("relu"), ["tower_init"],
                                           probabilities, labels)
    row.update(train_loss=[0.5, 0.5], train_seconds=1.0, steps=2, update_mode="sync")
    config = cli.experiment_config(values, work_dir=os.path.join(output_dir, "runs")).to_dict()
    return experiment.write_results(str(output_dir), {**values, **config}, [row])


DAMAGED_ROWS = {
    # name: (how the row's JSON text is changed, what the error names)
    "NaN auc_mean": (lambda row: {**row, "auc_mean": math.nan},
                     "auc_mean is NaN, which is not of type 'number'"),
    "null auc_mean": (lambda row: {**row, "auc_mean": None}, "auc_mean is null"),
    "word auc_mean": (lambda row: {**row, "auc_mean": "high"}, 'auc_mean is "high"'),
    "no aucs": (lambda row: {k: v for k, v in row.items() if k != "aucs"},
                "'aucs' is a required property"),
    "replicas disagree with aucs": (lambda row: {**row, "replicas": 3}, "aucs holds 2 values"),
    "sources as a string": (lambda row: {**row, "sources": "tower_init"},
                            "sources is \"tower_init\", which is not of type 'array'"),
    "auc_mean not the mean of aucs": (lambda row: {**row, "auc_mean": 0.99}, "mean of aucs"),
    "rel_pd out of range": (lambda row: {**row, "rel_pd": 7.0},
                            "rel_pd is 7.0, which is greater than the maximum of 2"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_ROWS))
def test_a_damaged_results_row_is_never_reused(case, tmp_path):
    damage, fragment = DAMAGED_ROWS[case]
    values = _guards_values()
    path = _write_finished_run(tmp_path, values)
    content = json.loads(open(path, encoding="utf-8").read())
    content["results"][0] = damage(content["results"][0])
    damaged = json.dumps(content)  # NaN written as the literal Python's json reads back
    with open(path, "w", encoding="utf-8") as f:
        f.write(damaged)
    lines = []
    with pytest.raises(ResultsMismatchError) as raised:
        cli.run_experiment(values, str(tmp_path), log=lines.append)
    message = str(raised.value)
    assert "\n" not in message and fragment in message, message
    assert message.startswith(f"{path}: results row 1 (relu) is damaged"), message
    assert "--noresume" in message and "delete the file" in message
    assert lines == []  # nothing printed as finished, nothing trained
    assert open(path, encoding="utf-8").read() == damaged  # the file is left for the user


def test_a_sound_results_row_is_reused_without_training(tmp_path):
    # The other side of the check above: the same row undamaged is taken as finished.
    values = _guards_values()
    _write_finished_run(tmp_path, values)
    lines = []
    rows = cli.run_experiment(values, str(tmp_path), log=lines.append)
    assert [experiment.row_key(r) for r in rows] == [("tower_init", "relu")]
    assert any("(finished earlier)" in line for line in lines)
    assert not any(line.startswith("Loaded ") for line in lines)  # no data, no training


def test_fewer_training_examples_than_one_batch_is_one_usage_line():
    with pytest.raises(app.UsageError, match=r"at least one batch \(batch_size=512\)") as raised:
        cli.experiment_config({"train_examples": 1})
    assert "train_examples=1" in str(raised.value) and "\n" not in str(raised.value)
    cli.experiment_config({"train_examples": 64, "batch_size": 64})


@pytest.mark.parametrize("labels, counts", [([0.0], "0 positive and 1 negative"),
                                            ([1.0, 1.0], "2 positive and 0 negative")])
def test_an_evaluation_set_of_one_class_is_refused(labels, counts):
    import numpy as np

    from tf_smelu.experiment.runner import TooLittleDataError, check_evaluation_labels
    from tf_smelu.training.config import TrainingConfig

    with pytest.raises(TooLittleDataError, match=counts) as raised:
        check_evaluation_labels(np.array(labels), TrainingConfig(eval_examples=len(labels)))
    assert f"--eval_examples (now {len(labels)})" in str(raised.value)
    assert isinstance(raised.value, UserError)
    check_evaluation_labels(np.array([0.0, 1.0]), TrainingConfig())


def test_progress_off_a_terminal_is_a_bounded_number_of_lines():
    import io

    from tf_smelu.training.replicas import PROGRESS_LINES, progress_bar

    import itertools
    import time

    log = io.StringIO()  # not a terminal, like a redirected stderr
    with progress_bar(total=100_000, description="relu", unit="step", stream=log) as bar:
        # A slow run: each look at tqdm's clock is a second later (tqdm's defaults
        # would print on every step).
        bar._time = itertools.count(time.time()).__next__
        for step in range(100_000):
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss="0.5", refresh=False)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert PROGRESS_LINES <= len(lines) <= PROGRESS_LINES + 3, lines
    assert lines[-1].startswith("relu: 100%") and "100000/100000" in lines[-1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    with progress_bar(total=3, description="relu", stream=terminal) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue()  # redrawn in place on a terminal, as before


@pytest.mark.parametrize("tail, one_line", [
    (["step 1", "error: training diverged: the loss became nan at step 2"], True),
    (["Traceback (most recent call last):", "ZeroDivisionError: a bug"], False),
])
def test_a_replica_jobs_user_error_is_its_workers_one_line(tail, one_line):
    from tf_smelu.experiment.runner import ReplicaJobUserError, _raise_workers_user_error
    from tf_smelu.training.launcher import WorkerFailedError
    from tf_smelu.training.replica_jobs import ReplicaJobError

    try:
        try:
            raise WorkerFailedError(1, 1, exit_codes=[-15, 1], pids=[1, 2],
                                    log_tails=[["peer stopped"], tail])
        except WorkerFailedError as cause:
            raise ReplicaJobError("Replica job relu_0 failed") from cause
    except ReplicaJobError as failed:
        error = failed
    with pytest.raises(ReplicaJobUserError if one_line else ReplicaJobError) as raised:
        _raise_workers_user_error(error, "relu sync")
    if one_line:
        assert str(raised.value) == ("relu sync, worker 1: training diverged: the loss became "
                                     "nan at step 2")
    else:
        assert raised.value is error and not isinstance(raised.value, UserError)


@pytest.mark.slow
def test_divergence_and_a_one_class_evaluation_set_end_in_one_line(tmp_path):
    diverged = _run([MAIN_JOB, *TINY, "--activations=relu", "--sources=tower_init",
                     "--learning_rate=1e30", f"--output_dir={tmp_path / 'lr'}"])
    _assert_one_line_error(diverged, "training diverged", "at step", "relu [tower_init]",
                           "learning rate 1e+30", "--learning_rate")
    assert not (tmp_path / "lr" / "results.json").exists()

    one = _run([MAIN_JOB, *TINY, "--eval_examples=1", f"--output_dir={tmp_path / 'eval'}"])
    _assert_one_line_error(one, "held-out examples", "positive", "negative",
                           "--eval_examples (now 1)")
    assert "relu" not in one.stdout  # refused before the first row trained

    # Multi-worker: the worker's trainer stops, and the main job says why in one line.
    jobs = _run([MAIN_JOB, *TINY, "--activations=relu", "--sources=init", "--workers=2",
                 "--learning_rate=1e30", f"--output_dir={tmp_path / 'jobs'}"])
    _assert_one_line_error(jobs, "relu sync, worker ", ": training diverged", "at step",
                           "(relu, learning rate 1e+30)")
    assert not (tmp_path / "jobs" / "results.json").exists()


@pytest.mark.slow
def test_a_piped_log_holds_few_progress_lines_and_a_damaged_row_stops_the_resume(tmp_path):
    from tf_smelu.training.replicas import PROGRESS_LINES

    args = [MAIN_JOB, "--train_examples=4000", "--eval_examples=300", "--replicas=2",
            "--hidden_units=8", "--batch_size=8", "--activations=relu", "--sources=tower_init",
            f"--output_dir={tmp_path}"]
    log_path = tmp_path / "run.log"
    # Through a pipe into a file, as `program 2>&1 | tee run.log` would.
    writer = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=open(log_path, "w"))
    run = subprocess.run([sys.executable, *args], stdout=writer.stdin, stderr=subprocess.STDOUT,
                         cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    writer.stdin.close()
    writer.wait(timeout=60)
    log = log_path.read_text(encoding="utf-8")
    assert run.returncode == 0, log[-3000:]
    progress = [line for line in log.replace("\r", "\n").splitlines()
                if line.startswith("relu [tower_init]")]
    # 500 steps: one line every 5% (and the first and last), not one per redraw.
    assert 3 <= len(progress) <= PROGRESS_LINES + 3, progress
    assert "500/500" in progress[-1]

    path = tmp_path / "results.json"
    content = json.loads(path.read_text(encoding="utf-8"))
    content["results"][0]["auc_mean"] = None
    path.write_text(json.dumps(content), encoding="utf-8")
    resumed = _run(args)
    _assert_one_line_error(resumed, str(path), "results row 1 (relu) is damaged",
                           "auc_mean is null", "--noresume")
# ---- activation numerics and RESCU speed (issue 20) ----


@pytest.mark.parametrize("spec", ["smelu:1e300", "smelu:1e-320", "rescu:1e-45:3",
                                  "generalized_smelu:1e38"])
def test_a_beta_float32_cannot_compute_is_one_usage_line(spec):
    # Used to pass the flag check, train the ReLU row, then die on NaN scores.
    with pytest.raises(app.UsageError, match="to be computed in float32") as raised:
        cli.experiment_config({"activations": ["relu", spec]})
    message = str(raised.value)
    assert "\n" not in message and spec.split(":")[0] in message


@pytest.mark.slow
def test_main_job_with_a_beta_float32_cannot_compute_stops_before_training(tmp_path):
    result = _run([MAIN_JOB, *TINY, "--activations=relu,smelu:1e300",
                   f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, "smelu:1e+300", "float32")
    assert "relu" not in result.stdout  # no row was trained
    assert not (tmp_path / "out" / "results.json").exists()
# ---- processes, output directories, resources, multi-worker start-up (issue 20) ----


def test_one_job_per_output_dir_and_a_dead_holders_lock_is_taken_over(tmp_path):
    import fcntl

    from tf_smelu.processes import LOCK_FILE, DirectoryInUseError, directory_lock

    notes = []
    with directory_lock(str(tmp_path / "out"), log=notes.append):
        with pytest.raises(DirectoryInUseError) as refused:
            with directory_lock(str(tmp_path / "out")):
                pass
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "in use by another job" in message
    assert "\n" not in message and notes == []
    # A holder killed by SIGKILL leaves its record, and the kernel drops its flock.
    lock = tmp_path / "out" / LOCK_FILE
    lock.write_text(json.dumps({"pid": 999999, "host": "h", "command": "python old_job.py"}))
    with directory_lock(str(tmp_path / "out"), log=notes.append):
        with open(lock) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert len(notes) == 1 and "pid 999999" in notes[0] and "old_job.py" in notes[0]
    assert lock.read_text() == ""  # released cleanly: nothing stale


def test_resources_are_checked_against_the_machine():
    from tf_smelu.processes import InsufficientResourcesError, Machine, check_resources

    small = Machine(cores=2, available_mb=8 * 1024)
    with pytest.raises(InsufficientResourcesError, match=r"--workers=64 needs at least 28.1 GB") as e:
        check_resources(64, 8, machine=small)
    assert "8.0 GB is available" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InsufficientResourcesError, match=r"--replicas=100000 needs at least"):
        check_resources(1, 100_000, machine=small)
    with pytest.raises(InsufficientResourcesError, match=r"use fewer --max_replicas$"):
        check_resources(1, 100_000, "max_replicas", machine=small)
    warnings = []
    check_resources(4, 8, machine=small, warn=warnings.append)
    assert len(warnings) == 1 and "--workers=4 on 2 core(s)" in warnings[0]
    check_resources(2, 64, machine=small, warn=warnings.append)
    unknown_memory = Machine(cores=2, available_mb=None)
    check_resources(64, 8, machine=unknown_memory, warn=warnings.append)
    assert len(warnings) == 2


def test_an_empty_output_dir_is_refused():
    # (--time_budget without --max_auc_loss: test_a_bad_configuration_is_one_usage_line.)
    cli.experiment_config({"time_budget": 60.0, "max_auc_loss": 0.002})
    with pytest.raises(app.UsageError, match="--output_dir is empty"):
        cli.check_output_dir("")


def test_run_program_reports_sigterm_with_exit_code_143(capsys):
    def main(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop main")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        run_program(main, argv=["prog"])
    assert exited.value.code == 143
    assert capsys.readouterr().err.strip() == (
        "error: terminated (SIGTERM); what had finished is kept")
    assert signal.getsignal(signal.SIGTERM) is before


def _meet_in_threads(flags_per_worker, timeout=30.0, present=None):
    """Runs `meet_peers` for the workers in `present`; returns each one's error or None."""
    import threading

    import portpicker

    from tf_smelu.training.cluster import ClusterPlace, meet_peers

    addresses = tuple(f"127.0.0.1:{portpicker.pick_unused_port()}" for _ in flags_per_worker)
    outcome, logs = {}, []

    def worker(index):
        try:
            meet_peers(ClusterPlace(addresses, index), flags_per_worker[index], timeout,
                       log=logs.append)
            outcome[index] = None
        except Exception as error:  # noqa: BLE001 - the outcome under test
            outcome[index] = error

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in (present if present is not None else range(len(flags_per_worker)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout + 40)
    return outcome, logs


def test_workers_meet_and_name_differing_flags_before_training():
    from tf_smelu.training.cluster import ClusterStartupError

    same = {"hidden_units": [8], "train_examples": 600}
    assert _meet_in_threads([same, same, same])[0] == {0: None, 1: None, 2: None}
    outcome, _ = _meet_in_threads([same, {**same, "hidden_units": [16]}])
    assert set(outcome) == {0, 1}
    for error in outcome.values():
        assert isinstance(error, ClusterStartupError)
        assert str(error) == ("worker 1 was started with other flags than worker 0: "
                              "--hidden_units: [8] on worker 0, [16] on worker 1")


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_a_worker_whose_peer_never_starts_says_so_and_stops(monkeypatch):
    from tf_smelu.training import cluster

    monkeypatch.setattr(cluster, "STARTUP_REPORT_SECONDS", (0.0, 60.0))
    outcome, logs = _meet_in_threads([{}, {}, {}], timeout=1.0, present=[0, 1])
    assert "worker 2 did not start within --startup_timeout=1 s" in str(outcome[0])
    assert str(outcome[1]) == str(outcome[0])  # the chief tells the others why
    assert any(line.startswith("waiting for worker") and line.endswith(
        "2 to start (0 s of --startup_timeout=1)") for line in logs), logs
    outcome, logs = _meet_in_threads([{}, {}], timeout=1.0, present=[1])
    assert "the chief (worker 0 at 127.0.0.1:" in str(outcome[1])
    assert any(line.startswith("waiting for worker 0 (the chief") for line in logs)


def _start(args):
    """A command line started as a user's terminal would (SIGINT not ignored)."""
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _workers_of(process, count=2, timeout=240):
    """The worker processes (`tf_smelu.training.distributed`) `process` started."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        workers = [child for child in psutil.Process(process.pid).children(recursive=True)
                   if "tf_smelu.training.distributed" in child.cmdline()]
        if len(workers) == count:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"{count} workers did not start: {process.communicate()[0][-2000:]}")


def _assert_gone_within(processes, seconds):
    import time

    import psutil

    deadline = time.monotonic() + seconds
    for process in processes:
        while True:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by init
                    break
            except psutil.NoSuchProcess:
                break
            assert time.monotonic() < deadline, f"process {process.pid} still runs"
            time.sleep(0.1)


MULTI_WORKER_JOB = [MAIN_JOB, *TINY, "--workers=2", "--activations=relu", "--batch_size=32",
                    "--train_examples=40000"]
"""A main job of 2-worker replica jobs that trains for minutes (1250 steps per job)."""


@pytest.mark.slow
def test_stopped_main_jobs_take_their_workers_and_leave_the_output_dir_to_the_next(tmp_path):
    import psutil

    args = [*MULTI_WORKER_JOB, f"--output_dir={tmp_path}"]
    killed = _start(args)
    try:
        workers = _workers_of(killed)
        for process in (psutil.Process(killed.pid), *workers):
            process.suspend()  # alive, holding the lock, leaving the cores to the second job
        second = _run(args)
        assert killed.poll() is None
        _assert_one_line_error(second, "in use by another job", f"pid {killed.pid} on host",
                               "recsys_reproducibility.py")
        killed.kill()  # SIGKILL (also to stopped ones): no cleanup, the kernel kills the workers
        killed.wait(timeout=60)
        _assert_gone_within(workers, 15)
    finally:
        killed.kill()
        killed.communicate()

    terminated = _start(args)
    try:
        workers = _workers_of(terminated)
        terminated.send_signal(signal.SIGTERM)  # as timeout, Slurm and Kubernetes stop a job
        output = terminated.communicate(timeout=60)[0]
        _assert_gone_within(workers, 5)
    finally:
        terminated.kill()
    assert terminated.returncode == 143, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    assert output.strip().splitlines()[-1] == (
        "error: terminated (SIGTERM); what had finished is kept")
    assert f"took over the lock {tmp_path}" in output and f"pid {killed.pid} on" in output


@pytest.mark.slow
def test_workers_started_with_other_flags_stop_before_training_naming_them(tmp_path):
    import portpicker

    addresses = [f"127.0.0.1:{portpicker.pick_unused_port()}" for _ in range(2)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tf_smelu.training.distributed", "--steps=2",
             "--train_examples=256", "--eval_examples=64", "--batch_size=32",
             f"--hidden_units={units}", "--startup_timeout=120"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**env, "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                 "task": {"type": "worker", "index": i}})})
        for i, units in enumerate(("8", "16"))]
    try:
        outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 1 and "Traceback" not in output, output[-2000:]
        assert output.strip().splitlines()[-1] == (
            "error: worker 1 was started with other flags than worker 0: "
            "--hidden_units: [8] on worker 0, [16] on worker 1")


@pytest.mark.slow
def test_a_job_too_big_for_the_machine_stops_before_anything_starts(tmp_path):
    result = _run([MAIN_JOB, "--replicas=100000", f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, "--replicas=100000 needs at least", "GB is available")
    assert not (tmp_path / "out").exists()


# ---- ReplicaStudy strategies (issue 20) ----


def test_study_strategy_that_is_no_tf_distribute_strategy_is_refused_at_once():
    import keras
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    train = tf.data.Dataset.from_tensor_slices((tf.zeros([4, 2]), tf.zeros([4]))).batch(2)
    with pytest.raises(ValueError, match=r"`strategy` must be a tf.distribute.Strategy. "
                                         r"Received: strategy='mirrored'"):
        ReplicaStudy(lambda seed: keras.Sequential(), train, (tf.zeros([2, 2]), tf.zeros([2])),
                     strategy="mirrored")


@pytest.mark.slow  # >= 1 s in one process: kept out of the fast tier
def test_study_and_churn_callback_of_a_model_whose_output_is_not_named():
    """Keras names an unnamed output `dense_<n>`, a new n at every build: replicas and
    reference must still be matched by the output's position."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_smelu.reproducibility import PredictionDifferenceCallback, ReplicaStudy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")

    def build_model(seed):
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8)(inputs))
        model = keras.Model(inputs, outputs)
        model.compile("adam", "binary_crossentropy")
        return model

    train = tf.data.Dataset.from_tensor_slices((x[:200], y[:200])).batch(50)
    [row] = ReplicaStudy(build_model, train, (x[200:], y[200:]), replicas=2, epochs=1).run()
    assert len(row["aucs"]) == 2 and row["rel_pd"] > 0
    reference = build_model(0)
    churn = PredictionDifferenceCallback(reference, x[200:])
    history = build_model(1).fit(train, epochs=1, verbose=0, callbacks=[churn])
    assert history.history["churn_rel_pd"][0] > 0


# ---- loose ends: stop signals, TFRecord files, held-out data (issue 21/22) ----

_CLEANUP_PROGRAM = '''
import atexit
import importlib.util
import sys
import time

# tf_smelu/common.py itself, without the package's TensorFlow import: a fast start.
spec = importlib.util.spec_from_file_location("common", sys.argv[1])
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


class Cleanup:  # stands for TensorFlow's cleanup of iterators and functions
    def __del__(self):
        print("cleaning up in main", flush=True)
        time.sleep(60)  # the signal's exception is raised here, where Python drops it


def cleanup_at_exit():  # a library's atexit hook: Python drops its exceptions too
    print("cleaning up at exit", flush=True)
    time.sleep(60)


def main(argv):
    if "--at_exit" in sys.argv:
        atexit.register(cleanup_at_exit)
    else:
        cleanup = Cleanup()
        del cleanup
    print("main went on", flush=True)


common.run_program(main, argv=[sys.argv[0]])
'''


@pytest.mark.slow  # three Python processes
def test_a_stop_signal_dropped_in_a_del_still_ends_the_run_with_its_exit_code(tmp_path):
    program = tmp_path / "cleanup.py"
    program.write_text(_CLEANUP_PROGRAM)
    # (signal, when: in main's cleanup or in an atexit hook)
    cases = [(signal.SIGINT, "in main"), (signal.SIGTERM, "in main"), (signal.SIGINT, "at exit")]
    common = os.path.join(REPO, "tf_smelu", "common.py")
    processes = [_start([str(program), common, *(["--at_exit"] if when == "at exit" else [])])
                 for _, when in cases]
    outputs = []
    try:
        for (signum, when), process in zip(cases, processes):
            lines = []
            for line in process.stdout:
                lines.append(line)
                if line.startswith(f"cleaning up {when}"):
                    process.send_signal(signum)
                    break
            outputs.append("".join(lines) + process.communicate(timeout=120)[0])
    finally:
        for process in processes:
            process.kill()
    words = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
    for (signum, when), process, output in zip(cases, processes, outputs):
        assert process.returncode == 128 + signum, (when, output[-2000:])
        assert "main went on" in output  # the signal's exception would be dropped ...
        assert f"error: {words[signum]}; what had finished is kept" in output  # ... yet it counts
        assert "Traceback" not in output and "Exception ignored" not in output, output[-2000:]


@pytest.mark.slow  # the main job as a user runs it
def test_held_out_files_that_do_not_match_the_training_data_stop_before_training(tmp_path):
    train, held_out = tmp_path / "train.csv", tmp_path / "held_out.tfrecord"
    train.write_text("user_id,item_id,label\n" + "".join(
        f"u{i % 9},{i % 5},{i % 2}\n" for i in range(200)))
    (tmp_path / "held_out.csv").write_text("user_id,label\nu1,0\nu2,1\n")
    held_out.write_text("user_id,item_id,label\nu1,1,0\n")  # a CSV named .tfrecord
    cases = {  # flags -> fragments of the one line
        "columns": ([f"--eval_dataset=csv:{tmp_path / 'held_out.csv'}"],
                    [f"held-out data {tmp_path / 'held_out.csv'}", f"training data {train}",
                     "missing ['item_id'], extra []"]),
        "kind": ([f"--eval_dataset=tfrecord:{held_out}"],
                 ["--eval_dataset must be csv data like --dataset"]),
    }
    for flags_, fragments in cases.values():
        result = _run([MAIN_JOB, *TINY, f"--dataset=csv:{train}", *flags_,
                       f"--output_dir={tmp_path / 'run'}"])
        _assert_one_line_error(result, *fragments)
        assert "tower_init" not in result.stdout  # no row trained
# ---- learning-rate sweep (issue 22) ----


@pytest.mark.parametrize("values, message", [
    ({"tune_learning_rate": True}, "set `max_auc_loss` too"),
    ({"tune_learning_rate": True, "workers": 2}, "runs in process only"),
    ({"tune_learning_rate": True, "update_mode": ["stale"], "sources": ["none"]},
     "runs in process only"),
])
def test_tune_learning_rate_where_it_cannot_run_is_one_usage_line(values, message):
    with pytest.raises(app.UsageError, match=message) as raised:
        cli.experiment_config(values)
    assert "\n" not in str(raised.value) and "tune_learning_rate" in str(raised.value)


def test_a_sweep_that_diverges_everywhere_is_one_line_and_keeps_what_it_trained(tmp_path):
    from tf_smelu.experiment import learning_rate
    from tf_smelu.training.replicas import DivergedError

    class Diverging:
        def row(self, recipe, sources, replicas, *, seed=None, learning_rate=None):
            raise DivergedError(f"training diverged: loss became nan at step 2 (relu, learning "
                                f"rate {learning_rate:g}); lower --learning_rate")

    config = CTRExperimentConfig(max_auc_loss=0.002, replicas=4)
    with pytest.raises(learning_rate.AllDivergedError) as raised:
        learning_rate.tune(config, lambda c: Diverging(), str(tmp_path), (), lambda line: None)
    message = str(raised.value)
    assert isinstance(raised.value, UserError) and "\n" not in message
    assert "diverged at every rate down to 0.00032" in message and "--learning_rate" in message
    cached = json.loads((tmp_path / learning_rate.CACHE_FILE).read_text())
    assert [rate["step"] for rate in cached["rates"]] == [-3, -2, -1, 0, 1]  # lower, then stop
    assert all(rate["diverged"] for rate in cached["rates"])


@pytest.mark.slow
def test_main_job_tune_learning_rate_with_multi_worker_jobs_is_one_line(tmp_path):
    result = _run([MAIN_JOB, *TINY, "--tune_learning_rate", "--update_mode=stale",
                   f"--output_dir={tmp_path}"], timeout=120)
    _assert_one_line_error(result, "tune_learning_rate", "in process only")
    assert not os.listdir(tmp_path)
# ---- the advisor's cost budgets (issue 22) ----


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_serve_cost": 0.5}, "`max_serve_cost` must be a number >= 1"),
        ({"max_train_cost": -1.0}, "`max_train_cost` must be a number >= 1"),
        ({"max_train_cost": math.nan}, "max_train_cost"),
        ({"max_serve_cost": math.inf}, "max_serve_cost"),
        ({"max_auc_loss": None, "max_serve_cost": 2.0},
         "`max_serve_cost` limits the `max_auc_loss` search only"),
        ({"activations": ["relu"], "remedies": ["ensemble:2", "smelu:1+ensemble:3"],
          "max_serve_cost": 1.0},
         "rule out every candidate, so relu would be compared with nothing: relu+ensemble(K=2) "
         "(serve cost 2 > --max_serve_cost=1); smelu(β=1)+ensemble(K=3) (serve cost 3 > "
         "--max_serve_cost=1)"),
        ({"activations": ["relu"], "remedies": ["ensemble:2"], "max_train_cost": 1.5},
         "relu+ensemble(K=2) (train cost 2 > --max_train_cost=1.5)"),
    ],
)
def test_a_cost_budget_that_rules_out_even_relu_or_everything_is_one_usage_line(values, message):
    with pytest.raises(app.UsageError) as raised:
        cli.experiment_config({"max_auc_loss": 0.002, **values})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_cost_budget_that_leaves_an_activation_is_accepted():
    config = cli.experiment_config({"max_auc_loss": 0.002, "activations": ["relu", "gelu"],
                                    "remedies": ["ensemble:2"], "max_serve_cost": 1.0})
    assert config.max_serve_cost == 1.0 and config.to_dict()["remedies"] == ["ensemble:2"]


@pytest.mark.slow
def test_budgets_that_rule_out_everything_stop_the_main_job_before_it_starts(tmp_path):
    result = _run([MAIN_JOB, *TINY, "--activations=relu", "--remedies=ensemble:2",
                   "--max_auc_loss=0.002", "--max_serve_cost=1", "--replicas=4",
                   f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, "rule out every candidate", "relu+ensemble(K=2)",
                           "serve cost 2 > --max_serve_cost=1")
    assert not (tmp_path / "out").exists()
    result = _run([MAIN_JOB, *TINY, "--max_auc_loss=0.002", "--max_serve_cost=0.5",
                   f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, "`max_serve_cost` must be a number >= 1", "0.5")
# ---- main job trainers and remedies (issue 21/22) ----


@pytest.mark.parametrize(
    "values, fragments",
    [
        ({"remedies": ["bogus:1"]}, ["bogus"]),
        ({"remedies": ["ema:2"]}, ["ema:2", "(0, 1)"]),
        ({"remedies": ["ensemble:1"]}, ["ensemble:1"]),
        ({"remedies": ["label_smoothing:-0.1"]}, ["label_smoothing:-0.1"]),
        ({"remedies": ["ema:0.9", "smelu:1"]}, ["'smelu:1' names no remedy"]),
        ({"trainer": "builtin", "remedies": ["ema:0.9"]}, ["trainer=builtin", "ema:0.9"]),
        ({"trainer": "keras", "sources": ["tower_init", "stale"]}, ["stale", "trainer=keras"]),
        ({"remedies": ["ema:0.9"], "sources": ["init+stale"]}, ["stale", "trainer=auto"]),
        ({"trainer": "keras", "workers": 2}, ["workers=2", "trainer=keras"]),
        ({"trainer": "keras", "beta_scale": "relative"}, ["beta_scale=relative"]),
        ({"trainer": "kears"}, ["kears"]),
    ],
)
def test_trainer_and_remedy_settings_are_checked_in_one_line(values, fragments):
    with pytest.raises(app.UsageError) as raised:
        cli.experiment_config(values)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


KERAS_TRAINER_CASES = {  # the flag's own check, the configuration's, the model's
    "unknown remedy": (["--remedies=ema:0.9,bogus:1"], ["--remedies", "bogus"]),
    "remedies with the builtin trainer": (["--trainer=builtin", "--remedies=ema:0.9"],
                                          ["trainer=builtin", "ema:0.9"]),
    "an uncompiled keras file": (["--trainer=keras", "--model={uncompiled}"],
                                 ["uncompiled.keras", "not compiled", "--trainer=builtin"]),
}


@pytest.fixture(scope="module")
def user_model_files(tmp_path_factory):
    """`uncompiled.keras` and `schedule.keras` (Adam with an ExponentialDecay schedule)."""
    import keras
    from test_main_job_keras_trainer import save_click_model

    root = tmp_path_factory.mktemp("user_models")
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.9)
    return {"uncompiled": save_click_model(root / "uncompiled.keras", None),
            "schedule": save_click_model(root / "schedule.keras", dict(
                optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy"))}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(KERAS_TRAINER_CASES))
def test_trainer_and_remedy_mistakes_end_in_one_line_before_training(case, user_model_files,
                                                                     tmp_path):
    args, fragments = KERAS_TRAINER_CASES[case]
    result = _run([MAIN_JOB, *TINY, *[a.format(**user_model_files) for a in args],
                   f"--output_dir={tmp_path / 'out'}"])
    _assert_one_line_error(result, *fragments)
    assert "Training" not in result.stdout and not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow  # loads data and builds the model: > 1 s
def test_a_learning_rate_for_an_optimizer_with_a_schedule_is_refused(user_model_files):
    import tf_smelu.reproducibility  # noqa: F401  (registers the keras trainer)
    from test_main_job_keras_trainer import RunLog
    from tf_smelu.experiment.runner import TRAINERS
    from tf_smelu.remedies import Recipe
    from tf_smelu.training.problem import UserModelError

    config = CTRExperimentConfig.from_dict(dict(
        trainer="keras", model=user_model_files["schedule"], train_examples=600,
        eval_examples=300, progress=False))
    trainer = TRAINERS["keras"](config, RunLog())
    with pytest.raises(UserModelError, match=r"schedule \(ExponentialDecay\)"):
        trainer.row(Recipe.parse("relu"), ("tower_init",), 2, learning_rate=0.1)
# ---- remedies: distill, anchor, codistill, warm_start in the replica study (issue 22) ----


def _remedy_study(**kwargs):
    """A tiny study whose `build_model` records every model it builds."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_smelu.reproducibility import ReplicaStudy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    built = []

    def build_model(seed):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy")
        built.append(model)
        return model

    train = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(50)
    return ReplicaStudy(build_model, train, (x[100:], y[100:]), replicas=2, epochs=1,
                        **kwargs), built


@pytest.mark.parametrize("spec", ["anchor:0.5", "warm_start", "smelu:1+warm_start+ema:0.9"])
def test_a_model_refresh_remedy_without_earlier_data_stops_before_training(spec):
    study, built = _remedy_study()
    with pytest.raises(ValueError, match=r"needs the previous model.*earlier_data=None") as error:
        study.compare([spec])
    assert "\n" not in str(error.value)
    assert [int(m.optimizer.iterations) for m in built] == [0]  # the check's model, untrained


def test_a_pulling_remedy_on_a_model_that_cannot_be_stacked_stops_before_training(tmp_path):
    import keras

    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"))
    study, built = _remedy_study(callbacks=[checkpoint])
    with pytest.raises(ValueError, match=r"Remedy codistill:0\.5 trains each replica in one fit"
                                         r".*callback ModelCheckpoint") as error:
        study.compare(["ema:0.9", "codistill:0.5"])
    assert "\n" not in str(error.value)
    assert [int(m.optimizer.iterations) for m in built] == [0]


@pytest.mark.parametrize("earlier, message", [
    ([[1.0, 2.0]], "`earlier_data` must be a tf.data.Dataset or a function"),
    ("empty", "`earlier_data` is empty"),
])
def test_earlier_data_the_study_cannot_read_is_one_clear_line(earlier, message):
    import tensorflow as tf

    if earlier == "empty":
        earlier = tf.data.Dataset.from_tensor_slices(([[1.0] * 4], [1.0])).take(0).batch(2)
    with pytest.raises(ValueError, match=message):
        _remedy_study(earlier_data=earlier)


@pytest.mark.parametrize("spec, message", [
    ("warm_start:1", "warm_start takes no value"),
    ("distill:-1", "LAMBDA must be a number >= 0"),
    ("anchor", "needs a value"),
    ("codistill:1e400", "LAMBDA must be a number >= 0"),
])
def test_a_remedy_value_out_of_range_is_one_line_before_anything_builds(spec, message):
    study, built = _remedy_study()
    with pytest.raises(ValueError, match=message):
        study.compare(["smelu:1", spec])
    assert built == []
