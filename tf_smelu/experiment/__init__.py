"""The replica experiment: accuracy and prediction difference per activation.

For each activation (and beta) and each set of irreproducibility sources, R
replicas are trained that are identical except for the sources switched on,
then evaluated on the same held-out examples; each result row holds their
accuracy next to their prediction difference with a confidence interval
(`tf_smelu/experiment/results.schema.json` documents the rows).

Modules, in the order data flows through them:

* `config`: `CTRExperimentConfig`, what to compare and how to train.
* `seeds`: the sources of irreproducibility and the seeds they vary.
* `harness`: `run_replicas` for any `model_fn` and data (measure your own
  model), `summarize_predictions` for predictions made elsewhere.
* `advisor`: the `--max_auc_loss` search and recommendation (pure logic
  over rows).
* `runner`: `run_ctr_experiment`, the main job's configuration in this
  process or as one multi-worker job per replica.
* `results`: `results.json`, written row by row and read back to resume.
* `report`: the text tables and `tradeoff.png`.
"""

from tf_smelu.experiment.config import CTRExperimentConfig
from tf_smelu.experiment.harness import run_replicas, summarize_predictions
from tf_smelu.experiment.report import (
    format_group_table,
    format_table,
    plot_tradeoff,
    report,
)
from tf_smelu.experiment.results import (
    ResultsMismatchError,
    environment,
    finished_rows,
    row_key,
    write_results,
)
from tf_smelu.experiment.runner import (
    advise_ctr_experiment,
    item_popularity_groups,
    run_ctr_experiment,
    run_multiworker_experiment,
)
from tf_smelu.experiment.seeds import (
    SOURCES,
    ReplicaSeeds,
    op_determinism,
    parse_sources,
    replica_seeds,
)

__all__ = [
    "SOURCES",
    "CTRExperimentConfig",
    "ReplicaSeeds",
    "ResultsMismatchError",
    "advise_ctr_experiment",
    "environment",
    "finished_rows",
    "format_group_table",
    "format_table",
    "item_popularity_groups",
    "op_determinism",
    "parse_sources",
    "plot_tradeoff",
    "replica_seeds",
    "report",
    "row_key",
    "run_ctr_experiment",
    "run_multiworker_experiment",
    "run_replicas",
    "summarize_predictions",
    "write_results",
]
