"""The admin console: the pages people use instead of the HTTP API.

Server-rendered HTML (Jinja2, autoescaped) with a little plain JavaScript where it
pays (a run's live progress); every form works without it. The HTTP functions that
serve the pages are in functions/console/; here is what they share and no rule of
their own: who may do what stays in shared.exports.access, runs start through
shared.runs.launcher, and so on.

- ``pages``: the templates and the one way a page is rendered;
- ``safety``: the headers every answer carries (a strict Content-Security-Policy,
  no framing, no sniffing) and the cross-site request forgery check of every form;
- ``forms``: reading a submitted form;
- ``wording``: refusals in words, each with the action that fixes it.

Templates are in ``templates/``, the stylesheet and script in ``static/``.
"""
