"""Fleets: agents, tools and job kinds declared in code, and the plans jobs decompose into."""

from fleetline.shared.fleet.declarations import Agent, JobKind, Tool
from fleetline.shared.fleet.definition import FleetDefinition
from fleetline.shared.fleet.loading import DEFAULT_APP, load_fleet
from fleetline.shared.fleet.plan import Plan, PlanError, Step, fan_out

__all__ = [
    "DEFAULT_APP",
    "Agent",
    "FleetDefinition",
    "JobKind",
    "Plan",
    "PlanError",
    "Step",
    "Tool",
    "fan_out",
    "load_fleet",
]
