"""The vendor-reported numbers, as data: the report prints them for side-by-side reading
(:func:`published_section`), and :mod:`continual.analysis.vendor` sets our runs beside each one
(``experiments/vendor_table.py``).

Each :class:`PublishedNumber` keeps the row as the source note gives it (setting, method,
metric, value, source) and, for the comparison, the value in the unit of the quantity we compute
(``quantity``; % for forgetting, drift and advantages, a plain ratio for gradient norms), the
kind of claim (a value, a range, or a sign) and the facts of the vendor's setting that a run of
ours must share to be comparable (model, domains, examples, loss level).
"""

from __future__ import annotations

from dataclasses import dataclass

from continual.analysis.markdown import md_table

__all__ = ["PUBLISHED", "PUBLISHED_NUMBERS", "VENDOR_LOSS", "PublishedNumber", "published_section"]

# The vendor trained every domain to a holdout loss near 0.15 nats (relative forgetting scales
# with 1 / that loss, so a run far from it is not comparable on the % metrics).
VENDOR_LOSS = 0.15
FIVE = ("med", "legal", "fin", "code", "sci")  # the vendor's 5 domains, in its listing order
FOUR = ("med", "legal", "code", "fin")  # the vendor's 4-domain order (forum post 173860)


@dataclass(frozen=True)
class PublishedNumber:
    """One published number and what a run of ours needs to be compared with it.

    ``quantity`` names what :mod:`continual.analysis.vendor` computes from our runs; ``claim``:
    ``value`` (``point`` is the published value), ``range`` (``low``..``high``) or ``sign``
    (``point``'s sign is the claim, e.g. "CRMA's loss is lower"). ``model`` (our model config),
    ``order`` / ``n_domains`` and ``examples`` (training, holdout per domain) are the vendor's
    setting, None where it did not say; ``loss_regime``: the vendor trained to a holdout loss
    near :data:`VENDOR_LOSS`; ``not_comparable``: a reason that holds for any run of ours.
    """

    setting: str
    method: str
    metric: str
    value: str
    source: str
    quantity: str
    claim: str
    point: float | None = None
    low: float | None = None
    high: float | None = None
    model: str | None = None
    order: tuple[str, ...] | None = None
    n_domains: int | None = None
    examples: tuple[int, int] | None = None
    loss_regime: bool = False
    not_comparable: str | None = None

    def row(self) -> tuple[str, str, str, str, str]:
        """The row as the source note gives it."""
        return (self.setting, self.method, self.metric, self.value, self.source)


# From shared/research/published-numbers.md: self-reported by the CRMA vendor (ModelBrew AI),
# not replicated; different models, data, steps and hyper-parameters than any run here.
_PAPER = "arXiv 2606.00382; HF dataset ModelBrew/sequential-forgetting-benchmark"
_MISTRAL5 = dict(model="mistral_7b", order=FIVE, n_domains=5, examples=(500, 100),
                 loss_regime=True)  # fmt: skip
_MISTRAL4 = dict(model="mistral_7b", order=FOUR, n_domains=4, loss_regime=True)
PUBLISHED_NUMBERS: tuple[PublishedNumber, ...] = (
    PublishedNumber(
        "Mistral-7B, 5 domains, 500 train / 100 holdout each, seeds 0/42/1234", "modular CRMA",
        "backbone drift", "-0.17% ± 0.17 (per seed -0.03, -0.10, -0.36)", _PAPER,
        "modular_drift", "value", point=-0.17, **_MISTRAL5),
    PublishedNumber(
        "same", "naive sequential LoRA", "forgetting", "+42.96% ± 5.5 (38.1, 41.7, 49.0)",
        "same", "naive_forgetting", "value", point=42.96, **_MISTRAL5),
    PublishedNumber(
        "same", "modular vs frozen", "holdout-loss advantage", "1.99% ± 0.54",
        "vendor paper page", "modular_vs_frozen", "value", point=1.99, **_MISTRAL5),
    # the average over the domains trained before the last (as the forgetting's 351 below)
    PublishedNumber(
        "Mistral-7B-v0.3, 4 domains med -> legal -> code -> fin, 1 run", "modular CRMA",
        "drift per domain", "-0.2, -0.1, -0.1, 0.0 (avg -0.1%)", "HF forum post 173860",
        "modular_drift", "value", point=round((-0.2 - 0.1 - 0.1) / 3, 3), **_MISTRAL4),
    PublishedNumber(
        "same", "naive sequential LoRA", "forgetting per domain",
        "+228, +593, +233 (avg +351.4%)", "same", "naive_forgetting", "value", point=351.4,
        **_MISTRAL4),
    PublishedNumber(
        "TinyLlama-1.1B-Chat, 4 domains", "modular CRMA", "drift", "-0.1%", "HF dataset",
        "modular_drift", "value", point=-0.1, model="tinyllama_1b", n_domains=4,
        loss_regime=True),
    PublishedNumber(
        "TinyLlama-1.1B, 200 Alpaca rows, seed 42", "LoRA vs LoRA+CRMA",
        "final loss; peak / mean grad norm", "0.1658 vs 0.1651; 12.15 vs 5.75; 2.34 vs 2.07",
        "HF forum post 173691", "peak_grad_ratio", "value", point=round(5.75 / 12.15, 4),
        model="tinyllama_1b",
        not_comparable="one single-task fine-tune (200 Alpaca rows, one seed), not a chain"),
    PublishedNumber(
        "Mistral-7B single task", "LoRA vs CRMA", "holdout loss", "0.1519 vs 0.1426",
        "HF forum post 173818", "single_task_gain", "sign",
        point=round(100 * (0.1519 - 0.1426) / 0.1519, 2), model="mistral_7b",
        not_comparable="the vendor's single task is not published (ours: each chain's "
        "first stage)"),
    PublishedNumber(
        "3 runs", "LoRA vs CRMA", "peak grad-norm reduction", "39-84%",
        "HF forum posts 173817/173818", "peak_grad_reduction", "range", low=39.0, high=84.0,
        loss_regime=True),  # models not stated; the runs of those posts reached ~0.15
    PublishedNumber(
        "literature", "EWC", "forgetting (vendor's table)", "+58%", "HF forum post 173818",
        "ewc_forgetting", "value", point=58.0,
        not_comparable="a literature figure quoted without its setting"),
)  # fmt: skip
PUBLISHED = [number.row() for number in PUBLISHED_NUMBERS]


def published_section() -> str:
    return "\n".join([
        "## Published numbers (vendor-reported, for side-by-side reading only)",
        "",
        "**Self-reported by the CRMA vendor (ModelBrew AI); no public code, no independent "
        "replication.** Models, data, steps and hyper-parameters differ from the runs above, so "
        "read these next to our numbers, not as a like-for-like comparison. Source: "
        "`shared/research/published-numbers.md`.",
        "",
        md_table(["setting", "method", "metric", "value", "source"], PUBLISHED),
    ])  # fmt: skip
