"""The composition root: the one place that turns a ``Config`` into clients.

The function app (functions/services.py, functions/activities.py), the command line
and ``ccexport serve`` all build what they use here, so the storage connection has one
order of precedence, the managed identity one credential per client, the API key one
pacer per process and the OAuth client one way of being made. Everything below takes
its clients as arguments and never reads the environment.

``stores`` (Blob clients, the run store) stays light:
``ccexport prepare`` uses it without loading aiohttp or the Constant Contact client;
``clients`` (the secret store, token locks, pacers, token managers, account access, the
activities' services) builds on it. The Azure SDKs load only inside the functions that need them.
"""
