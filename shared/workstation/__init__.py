"""The workstation: what runs only on a person's machine, never deployed.

The ``ccexport`` command line (``cli`` and its commands), the progress bar, the
Durable Task engine in this process (``local_engine``, ``durable_context``,
``local_run``) and ``serve``. The only room that may import ``functions/``: it runs the
app's own orchestrator. ``.funcignore`` leaves it out of the deployment.
"""
