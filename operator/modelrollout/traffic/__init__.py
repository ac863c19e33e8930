"""Traffic routers: one module per kind of route object (see :mod:`.registry`)."""

from modelrollout.traffic.base import Names, RouteError, Router

__all__ = ["Names", "RouteError", "Router"]
