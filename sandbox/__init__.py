"""A local stand-in for the Constant Contact V3 API (see sandbox/README or `ccexport sandbox`)."""
