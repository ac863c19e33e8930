"""The kopf shell: handlers, the reconcile, Kubernetes adapters and the operator's own metrics."""
