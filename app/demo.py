"""Demo data for the embedded default (each bounded context adds its own seed function)."""
import importlib
import pkgutil


def seed():
    """Run every ``seed_demo()`` found in app.services modules; each must be idempotent."""
    import app.services as services
    for mod in sorted(pkgutil.iter_modules(services.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"app.services.{mod.name}")
        fn = getattr(module, "seed_demo", None)
        if fn:
            fn()
