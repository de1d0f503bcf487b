"""Azure Functions bindings: triggers, the orchestrator, activities, the HTTP API.

Each module holds one df.Blueprint; function_app.py registers them. Thin by rule:
parse the binding, call shared/, return.
"""
