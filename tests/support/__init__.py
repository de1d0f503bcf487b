"""Helpers the tests share; no tests here (pytest collects none of these modules).

Services the tests start and stop (``services``: Azurite and child processes;
``sandbox_service``: the Constant Contact sandbox; ``serve_service``: ``ccexport
serve``; ``keyvault_fake``: a local Key Vault), ways to talk to them (``sandbox_api``,
``ctct_support``), the function app without a host (``function_harness``, and the
shared requests and events of ``http_calls`` and ``trigger_calls``), Durable replay
(``durable_history``, ``toy_export``, ``scripted_account``), segment and body checks
(``segment_trees``, ``body_checks``, ``sample_emails``) and the guard on reads outside
the repository (``repository_guard``).

Test modules import from here, never from one another (tests/test_test_layout.py).
"""
