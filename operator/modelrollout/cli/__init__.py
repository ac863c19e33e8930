"""The ``modelrollout`` and ``kubectl-modelrollout`` command line."""
