"""Fleets: agents, tools and job kinds declared in code, and the plans jobs decompose into."""

from fleetline.shared.fleet.debate import DebateRules, debate, lexical_agree
from fleetline.shared.fleet.declarations import Agent, JobKind, Tool
from fleetline.shared.fleet.definition import FleetDefinition
from fleetline.shared.fleet.loading import DEFAULT_APP, load_fleet
from fleetline.shared.fleet.pipeline import Stage, StageInputError, pipeline, stage
from fleetline.shared.fleet.plan import Plan, PlanError, Step, fan_out
from fleetline.shared.fleet.supervised import ProposedAction, Supervision, supervised

__all__ = [
    "DEFAULT_APP",
    "Agent",
    "DebateRules",
    "FleetDefinition",
    "JobKind",
    "Plan",
    "PlanError",
    "ProposedAction",
    "Stage",
    "StageInputError",
    "Step",
    "Supervision",
    "Tool",
    "debate",
    "fan_out",
    "lexical_agree",
    "load_fleet",
    "pipeline",
    "stage",
    "supervised",
]
