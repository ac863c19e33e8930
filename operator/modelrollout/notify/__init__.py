"""Notifications of rollout decisions: what is sent, pure (``format``); the sending is
:mod:`modelrollout.operator.notify`."""
