"""tf_smelu/experiment/results.schema.json: valid, matched by the committed results, with teeth.

Tests that run an experiment check their own results.json with the
`validate_results` fixture of conftest.py.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib

import pytest
from jsonschema import Draft202012Validator

from tf_smelu.experiment.results import ResultsValidator, row_problem

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SCHEMA_PATH = REPO / "tf_smelu" / "experiment" / "results.schema.json"
COMMITTED = sorted(DOCS.glob("*_results.json"))
DELETE = object()


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _errors(content: dict) -> list[str]:
    return [error.message for error in ResultsValidator(_schema()).iter_errors(content)]


def _with_row(**changes) -> dict:
    """The first committed row of docs/default_results.json with `changes` (`DELETE`: drop)."""
    content = json.loads((DOCS / "default_results.json").read_text(encoding="utf-8"))
    row = copy.deepcopy(content["results"][0])
    for key, value in changes.items():
        if value is DELETE:
            del row[key]
        else:
            row[key] = value
    content["results"] = [row]
    return content


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = _schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]


def test_every_property_is_documented():
    # The schema is the file's user-facing documentation.
    undocumented = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, child in node.get("properties", {}).items():
                if "description" not in child:
                    undocumented.append(f"{where}/{name}")
            for key, child in node.items():
                if key not in ("if", "then"):  # conditions restate documented properties
                    walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{where}/{index}")

    walk(_schema(), "")
    assert not undocumented


def test_the_committed_results_are_found():
    # Without this a broken glob would make the parametrized test below vanish.
    assert len(COMMITTED) >= 3, COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_results_match_the_schema(path, validate_results):
    validate_results(path)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_row_fields_are_all_documented(path):
    # Rows may carry undocumented fields (additionalProperties), but the ones
    # this repository writes should be in the schema.
    documented = set(_schema()["$defs"]["row"]["properties"])
    rows = json.loads(path.read_text(encoding="utf-8"))["results"]
    assert {key for row in rows for key in row} <= documented


def test_an_undefined_interval_is_null_for_two_replicas():
    content = _with_row(replicas=2, rel_pd_ci=[None, None], rel_pd_std=None)
    assert _errors(content) == []


BAD_ROWS = [
    {"rel_pd": DELETE},
    {"abs_pd": -0.01},
    {"rel_pd": -0.01},
    {"rel_pd": 2.5},
    {"replicas": 1},
    {"replicas": 2.5},
    {"sources": ["tower"]},
    {"sources": ["update:async"]},
    {"sources": ["update:sync", "update:stale"]},
    {"sources": "tower_init"},
    {"rel_pd_ci": [0.01, None]},
    {"rel_pd_ci": [0.01]},
    {"auc_mean": 1.2},
    {"activation": "SmeLU"},
    {"activation": "smelu", "beta": 0.0},
    {"update_mode": "async"},
    {"rel_pd_by_group": {"item_head": {"rel_pd": 0.1, "rel_pd_ci": [0.0, 0.2]}}},
    # A resume needs them: rows are matched by label, the advisor reads aucs.
    {"label": DELETE},
    {"aucs": DELETE},
    {"label": ""},
    # JSON has no NaN or Infinity, though Python's json reads them.
    {"auc_mean": math.nan},
    {"rel_pd_ci": [math.inf, math.inf]},
    {"rel_pd_ci": [0.01, math.nan]},
]


def _ids(changes):
    return repr(changes).replace(repr(DELETE), "DELETE")


@pytest.mark.parametrize("changes", BAD_ROWS, ids=_ids)
def test_schema_rejects_a_bad_row(changes):
    assert _errors(_with_row(**changes))


@pytest.mark.parametrize("changes", BAD_ROWS, ids=_ids)
def test_a_row_the_schema_rejects_is_not_resumed(changes):
    assert row_problem(_with_row(**changes)["results"][0])


def test_the_resume_check_names_the_failing_field_as_the_file_writes_it():
    assert row_problem(_with_row(auc_mean=None)["results"][0]) == (
        "auc_mean is null, which is not of type 'number'")
    assert row_problem(_with_row(rel_pd_ci=[0.01, math.nan])["results"][0]) == (
        "rel_pd_ci[1] is NaN, which is not of type 'number'")


@pytest.mark.parametrize("changes, problem", [
    ({"replicas": 3}, "aucs holds 8 values, not 3"),
    ({"auc_mean": 0.5}, "auc_mean 0.5 is not the mean of aucs"),
    ({"rel_pd_pairs": [0.1]}, "rel_pd_pairs holds 1 values, not 28"),
    ({"rel_pd": 0.9}, "rel_pd 0.9 is not the mean of rel_pd_pairs"),
    ({"outlier_replicas": [8]}, "outlier_replicas [8] are not replica indices below 8"),
], ids=_ids)
def test_the_resume_check_adds_what_the_schema_cannot_say(changes, problem):
    content = _with_row(**changes)
    assert _errors(content) == []  # valid, yet the fields disagree
    assert problem in row_problem(content["results"][0])


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_the_committed_rows_would_be_resumed(path):
    rows = json.loads(path.read_text(encoding="utf-8"))["results"]
    assert [row_problem(row) for row in rows] == [None] * len(rows)


def test_schema_ties_beta_to_known_activations():
    assert _errors(_with_row(activation="relu", beta=0.5))
    content = _with_row(activation="smelu")  # the base row has beta null
    assert _errors(content)
    # Unknown (e.g. user-registered) activations may or may not take a beta.
    assert _errors(_with_row(activation="my_activation", beta=0.5)) == []


def test_schema_rejects_a_file_without_environment_or_with_unknown_top_level_keys():
    content = _with_row()
    del content["environment"]
    assert _errors(content)
    content = _with_row()
    content["extra"] = 1
    assert _errors(content)


def test_validate_results_reports_the_failing_path(tmp_path, validate_results):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_with_row(abs_pd=-0.5)), encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match=r"results/0/abs_pd: -0\.5 is less than"):
        validate_results(path)


@pytest.mark.parametrize("replicas", [2, 3])
def test_rows_the_code_writes_match_the_schema(tmp_path, validate_results, replicas):
    """`summarize_predictions` + `write_results` without training (fast); R = 2 writes nulls."""
    import numpy as np

    from tf_smelu import experiment, registry

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.3).astype(np.float64)
    probabilities = np.clip(0.3 + 0.1 * rng.standard_normal((replicas, 400)), 0.01, 0.99)
    groups = {"item_head": np.arange(400) < 300, "item_tail": np.arange(400) >= 300}
    in_process = experiment.summarize_predictions(
        registry.Activation.parse("smelu:0.4"), ["tower_init"], probabilities, labels,
        eval_groups=groups,
    )
    in_process.update(train_loss=[0.5] * replicas, train_seconds=1.0, steps=10, update_mode="sync")
    multi_worker = experiment.summarize_predictions(
        registry.Activation.parse("relu"), ["update:local_sgd"], probabilities, labels,
    )
    multi_worker.update(train_seconds=2.0, update_mode="local_sgd", workers=2)
    path = experiment.write_results(
        str(tmp_path), {"replicas": replicas, "hidden_units": ["8"]}, [in_process, multi_worker]
    )
    rows = validate_results(path)["results"]
    assert (rows[0]["rel_pd_ci"] == [None, None]) == (replicas == 2)


@pytest.mark.slow
def test_the_wheel_ships_the_schema_and_requires_jsonschema(tmp_path):
    # A resume reads the schema from the installed package, not from a checkout.
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"  # setuptools builds in the source tree: not in the checkout
    shutil.copytree(REPO / "tf_smelu", source / "tf_smelu",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = json.loads(archive.read("tf_smelu/experiment/results.schema.json"))
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = archive.read(metadata).decode().splitlines()
    assert shipped == _schema()
    assert any(line.startswith("Requires-Dist: jsonschema") for line in requires), requires


def test_a_file_written_before_a_field_existed_resumes_when_the_field_is_at_its_default(tmp_path):
    from tf_smelu.experiment import CTRExperimentConfig, ResultsMismatchError, finished_rows
    from tf_smelu.experiment.results import write_results

    config = CTRExperimentConfig(replicas=2).to_dict()
    defaults = CTRExperimentConfig().to_dict()
    older = {k: v for k, v in config.items() if k not in ("trainer", "row_trainer", "remedies")}
    write_results(str(tmp_path), older, [], complete=False)
    assert finished_rows(str(tmp_path), config, defaults=defaults) == []
    # A new field away from its default did change what runs: the file is refused.
    changed = CTRExperimentConfig(replicas=2, trainer="keras").to_dict()
    with pytest.raises(ResultsMismatchError, match="trainer: '<unset>' -> 'keras'"):
        finished_rows(str(tmp_path), changed, defaults=defaults)
    # Without defaults every missing field differs, as before.
    with pytest.raises(ResultsMismatchError, match="row_trainer"):
        finished_rows(str(tmp_path), config)


def test_a_stopped_search_resumes_under_another_time_or_cost_budget(tmp_path):
    from tf_smelu.experiment import CTRExperimentConfig, ResultsMismatchError, finished_rows
    from tf_smelu.experiment.results import write_results

    searched = CTRExperimentConfig(max_auc_loss=0.002, time_budget=480.0)
    write_results(str(tmp_path), searched.to_dict(), [], complete=False)
    again = CTRExperimentConfig(max_auc_loss=0.002, time_budget=3600.0, max_serve_cost=1.0,
                                max_replicas=64)
    assert finished_rows(str(tmp_path), again.to_dict()) == []
    # What changes a row's numbers still refuses the file.
    other_rate = CTRExperimentConfig(max_auc_loss=0.002, time_budget=480.0, replicas=6)
    with pytest.raises(ResultsMismatchError, match="replicas: 4 -> 6|replicas: 8 -> 6"):
        finished_rows(str(tmp_path), other_rate.to_dict())
