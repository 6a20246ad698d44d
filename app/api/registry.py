"""Registers every blueprint: each module in app/api that defines ``bp`` (besides ops) is mounted."""
import importlib
import pkgutil

import app.api as api_pkg

SKIP = {"registry", "ops", "openapi"}


def register_blueprints(app):
    for mod in sorted(pkgutil.iter_modules(api_pkg.__path__), key=lambda m: m.name):
        if mod.name in SKIP:
            continue
        module = importlib.import_module(f"app.api.{mod.name}")
        bp = getattr(module, "bp", None)
        if bp is not None:
            app.register_blueprint(bp)
