"""Jina executors: thin glue around the ``meshsearch`` core (validate, batch, call, report errors)."""
