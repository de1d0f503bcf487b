"""``ccexport serve``: the function app on one machine, without the Functions Core Tools.

The same HTTP functions, triggers, orchestrator and activities as in Azure, hosted by
this process on 127.0.0.1:

- ``host``: finds the app's functions and their bindings in function_app.py, as the
  Functions host does;
- ``http``: serves each HTTP function at its route through one aiohttp adapter, and
  signs callers in as App Service authentication would;
- ``durable``: the Durable Functions HTTP API that the app's client bindings call,
  over the in-process Durable Task engine;
- ``inbox``: raises the blob trigger for files that appear in the inbox (a folder or
  the inbox container), as Event Grid does;
- ``schedule``: fires the timer trigger on its NCRONTAB schedule;
- ``command``: the command line, start-up and a clean stop.

Workstation-only: never deployed (.funcignore keeps it out of the package).
"""
