"""Runs: one export run, from the start decision to the report.

``ids`` (run ids), ``contract`` (the orchestrator's names, input and output; each
activity's results in ``prepared``, ``uploads`` and ``membership``), ``bookkeeping``
(the orchestrator's tally), ``launcher`` (starting runs from events, the schedule or a
request), ``activities`` (what each activity does), ``store`` (staged bodies,
acceptance marks, the report), ``index`` (recent runs), ``next_state`` (the snapshot a
run leaves), ``mirror`` (removals) and ``report``.
"""
