"""The bounded contexts, listed once: each registers its policy kinds, required rulesets and engine actions.

Nothing registers itself by being imported: ``create_app``, the CLI and the test wiring call ``register()``.
A new context adds one line to CONTEXTS.
"""
from app.services import identity, knowledge, ledger, membership, service, simulation, tickets

# identity last: its demo seed gives the staff the contexts before it created their passwords
CONTEXTS = (ledger, membership, tickets, service, knowledge, simulation, identity)

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
    """Every context's demo data, in CONTEXTS order (each seed is idempotent).

    Returns:
        {context name: what its seed returned} (e.g. the demo passwords identity set, to print once).
    """
    return {ctx.__name__.rsplit(".", 1)[1]: ctx.seed_demo() for ctx in CONTEXTS}
