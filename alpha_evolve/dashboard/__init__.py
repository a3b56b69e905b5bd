"""The web dashboard of tracked sessions and run directories.

Public face: ``dashboard.app`` (``create_app``, ``DashboardConfig``: the Starlette app ``alpha-evolve dashboard``
serves) and ``dashboard.runs`` (read-only views of run directories). Nothing is imported here, so importing the
package does not pull in Starlette.
"""

__all__ = ["app", "runs"]
