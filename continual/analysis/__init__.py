"""Reading finished runs back: finding and loading them (``runs``), over-seed tables
(``tables``), figures (``plots``), the evaluation-depth tables (``eval_tables``), the task
accuracy of pairs domains (``accuracy_tables``), the markdown report (``report``, with
``report_sections``, ``accuracy_sections``, ``reference_sections`` and ``published``), the
method comparison on the command line (``compare``) and the published numbers beside ours with
a verdict (``vendor``)."""

from continual.analysis.plots import (  # noqa: F401
    ACC_LABEL,
    GRAD_LABEL,
    NLL_LABEL,
    plot_accuracy_curves,
    plot_forgetting_curves,
    plot_grad_norms,
    plot_heatmaps,
)
from continual.analysis.runs import (  # noqa: F401
    METHOD_ORDER,
    RUN_KEYS,
    IncompleteRun,
    NoRunsError,
    domain_order,
    drop_duplicate_runs,
    find_incomplete_runs,
    find_runs,
    is_reference,
    label_methods,
    load_metrics,
    load_train_logs,
    method_order,
    method_stage_labels,
    reference_methods,
    stage_labels,
    trained_order,
    without_references,
)
from continual.analysis.tables import (  # noqa: F401
    GRAD_STATS,
    forgetting_summary,
    gradient_summary,
    loss_matrices,
    mean_matrix,
    paired_differences,
    run_summaries,
    stage_summary,
    summary_table,
)
