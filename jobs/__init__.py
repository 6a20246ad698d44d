"""Jobs: plain functions taking ids/keys only. INTERIM: enqueue runs inline (RQ wiring to come)."""
import importlib


def redis_connection(url=None):
    import redis
    from flask import current_app
    return redis.Redis.from_url(url or current_app.config["REDIS_URL"])


def resolve(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def enqueue(path, *args, job_id=None, **kwargs):
    """Run the job ``path`` ("jobs.ledger.reconcile") with args; inline when there is no Redis."""
    return resolve(path)(*args, **kwargs)
