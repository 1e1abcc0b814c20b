"""Shared test configuration and fixtures."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True, scope="module")
def fresh_keras_state_per_module():
    """Clears Keras' global state after each test module, as a new process would start.

    Without it, every model the suite has built stays registered and reachable, and a
    test late in one long pytest process ran 15 times slower than alone.
    """
    yield
    if "keras" in sys.modules:  # a module that never imported Keras leaves nothing to clear
        sys.modules["keras"].backend.clear_session(free_memory=False)  # gc runs anyway

@pytest.fixture(scope="session")
def results_validator():
    """The package's `ResultsValidator` (draft 2020-12, finite numbers) of its results schema."""
    from tf_smelu.experiment.results import ResultsValidator, results_schema

    schema = results_schema()
    ResultsValidator.check_schema(schema)
    return ResultsValidator(schema)


@pytest.fixture
def validate_results(results_validator) -> Callable[[str | os.PathLike], dict]:
    """Asserts that a written results.json matches `tf_smelu/experiment/results.schema.json`.

    Returns:
        A function taking the path of a results.json; it fails the test with
        the first (by JSON path) schema violation and the number of others,
        and otherwise returns the file's parsed content.
    """

    def validate(path: str | os.PathLike) -> dict:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        # Sort so that the reported error does not depend on the validator's walk order.
        errors = sorted(
            results_validator.iter_errors(content),
            key=lambda e: [(isinstance(part, str), part) for part in e.absolute_path],
        )
        if errors:
            first = errors[0]
            where = "/".join(str(part) for part in first.absolute_path) or "(top level)"
            pytest.fail(
                f"{path} does not match results.schema.json at {where}: {first.message} "
                f"({len(errors) - 1} more error(s))",
                pytrace=False,
            )
        return content

    return validate


@pytest.fixture
def assert_processes_gone() -> Callable[[list[int]], None]:
    """Asserts that processes (e.g. workers a launcher stopped) no longer run.

    Returns:
        A function taking process ids; it fails the test if one of them still
        runs or is still a child of this test process.
    """
    # Imported here so that tests which start no processes run without it.
    import psutil

    def check(pids: list[int]) -> None:
        for pid in pids:
            # A killed grandchild may linger a moment as init's zombie.
            try:
                gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            assert gone, f"process {pid} still runs"
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
        assert not mine & set(pids), f"processes {sorted(mine & set(pids))} are still children"

    return check
