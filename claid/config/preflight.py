"""What a run sets and checks before it opens an MLflow run or builds a network."""

from __future__ import annotations

from omegaconf import DictConfig


def prepare_run(cfg: DictConfig) -> int:
    """Apply ``engine.threads`` (claid/threads.py) and check the weights of every
    configured model at once (one WeightsUnavailableError naming each missing one,
    not one per build). Returns the thread count."""
    from claid.config.rules import SettingsError
    from claid.models.weights import check_configured_weights
    from claid.threads import apply_threads

    try:
        threads = apply_threads(cfg.engine.get("threads", "auto"))
    except ValueError as err:  # a settings error reads as its one line, no traceback
        raise SettingsError(str(err)) from None
    from claid.config.run_settings import region_source

    # the region source names the models it builds (regions from a file: no backbone)
    check_configured_weights(region_source(cfg).weight_groups())
    from claid.rerank.settings import parse_rerank

    methods = parse_rerank(cfg.get("rerank"))
    if "ames" in methods:  # its model and detector files, before hours of extraction
        from claid.config.run_settings import local_backbone
        from claid.rerank.ames_inputs import check_ames_weights

        check_configured_weights({"backbone (rerank=ames)": local_backbone(cfg, methods)})
        check_ames_weights(methods["ames"])
    return threads
