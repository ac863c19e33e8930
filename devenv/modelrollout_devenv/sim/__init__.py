"""Simulated model servers and a gateway-like traffic generator for the local environment.

The operator judges a rollout only through what Prometheus scrapes and what the
route objects say. These simulators produce exactly that, with no container
runtime: ``model_server`` is one process per model version that answers
predictions and exports the metrics a real serving stack would, with faults
that can be switched on at run time; ``traffic`` reads the live route object
from the API server and sends (and mirrors) requests the way a gateway that
obeys that object would. End-to-end tests and ``make demo`` run both.
"""
