"""From a corpus to token blocks, one step per module.

``sources`` (readers named by a ``_target_`` node) -> ``clean`` -> ``dedup`` -> ``split``
and ``holdout`` (the holdout and validation sets, with ``overlap``, the leakage control) ->
``pack``; ``domain.build_domain`` runs
the chain for one domain of an experiment and returns a ``DomainData``.
"""
