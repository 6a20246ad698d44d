"""The bounded contexts, listed once: each registers its policy kinds, required rulesets and engine actions.

Nothing registers itself by being imported: ``create_app``, the CLI and the test wiring call ``register()``.
A new context adds one line to CONTEXTS.
"""
from app.services import ledger, membership, simulation, tickets

CONTEXTS = (ledger, membership, tickets, simulation)

_registered = False


def register():
    """Register every context's policy kinds, rulesets and actions (idempotent, once per process)."""
    global _registered
    if _registered:
        return
    for ctx in CONTEXTS:
        ctx.register()
    _registered = True


def seed_demo():
    """Every context's demo data, in CONTEXTS order (each seed is idempotent)."""
    for ctx in CONTEXTS:
        ctx.seed_demo()
