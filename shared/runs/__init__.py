"""Runs: one export run, from the start decision to the report.

``contract`` (ids and the JSON the orchestrator carries), ``launcher`` (starting runs
from events, the schedule or a request), ``activities`` (what each activity does),
``store`` (staged bodies, acceptance marks, the report), ``index`` (recent runs),
``next_state`` (the snapshot a run leaves), ``mirror`` (removals) and ``report``.
"""
