"""The config side of claid: from the composed Hydra config to checked, typed settings.

    rules.py         SettingsError and the range rules every setting is checked with
    checks.py        the config-wide checks (keys a group's target takes, value ranges,
                     model names), all before any work
    run_settings.py  the one reader of the whole config: each stage's own settings
    build.py         config groups -> objects (Hydra ``_target_``), built on first use
    registered.py    the component classes a file on disk (an index dir) may name
    preflight.py     threads and weight files, checked before an MLflow run opens
"""
