"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:app``."""
import logging

from app import create_app

app = create_app()

# load the active policy set and register its rulesets once, before serving (per worker process)
from app import policy  # noqa: E402
policy.startup(app)

if app.config.get("TICKER"):
    if app.config.get("REDIS_URL"):
        # with Redis, periodic jobs belong to `patron worker` (RQ cron), not to web processes
        logging.getLogger(__name__).warning("PATRON_TICKER ignored: PATRON_REDIS_URL is set")
    else:
        from jobs.runner import start_ticker
        start_ticker(app)
