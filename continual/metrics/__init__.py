"""Metric definitions: continual-learning metrics over the stage x domain loss matrix
(``matrix``) and accuracy matrix (``accuracy``), the summary of a multi-task run
(``multitask``), gradient-norm stability per stage
(``stability``) and the statistics used to compare methods over seeds (``stats``)."""

from continual.metrics.accuracy import accuracy_forgetting_table, accuracy_summary  # noqa: F401
from continual.metrics.matrix import (  # noqa: F401
    FORGETTING_TABLE_COLUMNS,
    average_forgetting_pct,
    backbone_drift_pct,
    bwt,
    final_average_loss,
    forgetting_abs,
    forgetting_pct,
    forgetting_table,
    fwt,
    general_retention_pct,
    loss_matrix,
    max_forgetting,
    summary_metrics,
)
from continual.metrics.multitask import (  # noqa: F401
    ACC_CHAIN_METRICS,
    CHAIN_METRICS,
    multitask_accuracy_summary,
    multitask_summary,
)
from continual.metrics.stability import gradient_stability  # noqa: F401
