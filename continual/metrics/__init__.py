"""Metric definitions: continual-learning metrics over the stage x domain loss matrix
(``matrix``) and accuracy matrix (``accuracy``), gradient-norm stability per stage
(``stability``) and the statistics used to compare methods over seeds (``stats``)."""

from continual.metrics.accuracy import (  # noqa: F401
    ACC_CHAIN_METRICS,
    accuracy_forgetting_table,
    accuracy_summary,
    multitask_accuracy_summary,
)
from continual.metrics.matrix import (  # noqa: F401
    CHAIN_METRICS,
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
    multitask_summary,
    summary_metrics,
)
from continual.metrics.stability import gradient_stability  # noqa: F401
