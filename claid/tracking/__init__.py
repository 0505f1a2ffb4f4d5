"""The MLflow side of claid: what a run logs and how runs are read back.

    mlflow_run.py     the Tracker: one MLflow run per job, its metrics, artifacts, errors
    run_identity.py   a job's name, tags and parameters (what the runs table shows)
    sweep_parent.py   the Hydra callback: one parent run per multirun and its summary
    job_sweep.py      a job's view of its multirun: the parent run it is nested under
    run_table.py      logged runs as a table (``claid runs``, notebooks, paper tables)
    tables.py         rows as CSV, Markdown and HTML (the summaries' files)
"""
