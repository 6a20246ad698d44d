"""Simulation (analysts): replay a history against a candidate policy set beside the active one, period-end preview, shadow evaluation."""
from app.services.simulation import report, runner, sources  # noqa: F401


def register():
    """Simulation declares no policy kinds, rulesets or actions of its own (it runs the other contexts' code)."""


def seed_demo():
    """No demo data: simulations run on the demo history the other contexts seed."""


def simulate(spec, progress=None):
    """Run a simulation and build its report.

    Args:
        spec: see ``runner.execute``.
        progress: optional callback (done, total).

    Returns:
        (report dict, member comparison rows).
    """
    return report.build(runner.execute(spec, progress))
