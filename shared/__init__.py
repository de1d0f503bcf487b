"""ccexport's core library: everything the function app and the command line share.

Nothing here imports azure.functions; the bindings in functions/ stay thin.
"""
