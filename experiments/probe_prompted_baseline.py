"""Time the stage-0 prompted baseline on the default model and print its per-domain NLL.

python experiments/probe_prompted_baseline.py [hydra overrides, e.g. eval.prompted_k=4]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from continual.config.validate import CONF_DIR
from continual.eval.suite import prompted_baseline
from continual.methods import build_method
from continual.models.loading import load_model
from continual.recipe import prepare_data


def main() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+sequence=med_legal_code", *sys.argv[1:]])
    order = list(cfg.sequence.order)
    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    data = prepare_data(cfg, loaded, order)
    method = build_method(cfg.method)
    model = method.setup(loaded.model)
    start = time.perf_counter()
    values = prompted_baseline(method, model, loaded.tokenizer, data, order, cfg, loaded.device)
    result = {
        "seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "k": cfg.eval.prompted_k,
        "context_tokens": cfg.eval.prompted_context_tokens,
        "prompted_nll": {domain: value for (domain, _), value in values.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
