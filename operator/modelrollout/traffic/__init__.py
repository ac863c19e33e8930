"""Traffic routers: one module per kind of route object."""

from modelrollout.traffic.base import Names, RouteError, Router

__all__ = ["Names", "RouteError", "Router"]
