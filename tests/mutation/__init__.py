"""Mutation testing of the core where a silent bug loses data or trust (``make mutate``).

mutmut 3 (pinned in requirements-dev.txt, configured in pyproject.toml's
``[tool.mutmut]``) copies the project into ``./mutants``, mutates the files named
there, learns which test calls which function, and runs, for each mutant, only the
tests that call the mutated function. ``python -m tests.mutation`` (this package's
``__main__``) runs it over the modules of ``SCOPE``, or some of them, and prints the
kill rate per module and the survivors. docs/MUTATION.md says how, and why each
remaining survivor is harmless.
"""
