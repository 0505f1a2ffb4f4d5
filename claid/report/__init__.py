"""The run's report: the one writer of ``metrics.json``, ``rankings.json`` and
``queries.json`` in a run dir.

    run_report.py   RunOutcome (what the stages returned) -> the three files; the shape
                    of ``metrics.json`` written down once (RunReport, versioned)

Stages return values (scores, notes, counts, timings); :func:`claid.pipeline.run`
collects them into a :class:`~claid.report.run_report.RunOutcome` and this package
turns that into the files. Nothing else writes into a report or metrics dict.
"""
