"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:app``."""
from app import create_app

app = create_app()

if app.config.get("TICKER"):
    from jobs.runner import start_ticker
    start_ticker(app)
