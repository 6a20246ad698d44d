"""Prometheus metrics (one registry per process)."""
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter("patron_http_requests_total", "HTTP requests", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("patron_http_request_seconds", "HTTP request latency", ["method", "route"],
                    registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
DECISIONS = Counter("patron_decisions_total", "Policy decisions recorded", ["ruleset"], registry=REGISTRY)
JOBS = Counter("patron_jobs_total", "Jobs run", ["job", "outcome"], registry=REGISTRY)
SCHEDULER_ERRORS = Counter("patron_scheduler_errors_total", "Failed iterations of the periodic-job scheduler",
                           ["loop"], registry=REGISTRY)  # loop: cron (RQ, in workers) | ticker (in-process)
for _loop in ("cron", "ticker"):  # documented metrics have a value from the start (0 until one fails)
    SCHEDULER_ERRORS.labels(_loop)
# app.db.transactional(): transactions rolled back and run again, by cause (a lock-wait tail shows here)
TRANSACTION_RETRIES = Counter("patron_db_transaction_retries_total",
                              "Transactions retried after a deadlock, serialization failure, lock timeout or busy "
                              "database", ["cause"], registry=REGISTRY)
for _cause in ("deadlock", "serialization", "lock", "busy"):
    TRANSACTION_RETRIES.labels(_cause)

# The customer-service floor, set by every floor read and by the minute monitoring job (jobs.service.monitor);
# "mostrecent": merged over processes, the latest write wins.
SERVICE_QUEUE_LENGTH = Gauge("patron_service_queue_length", "Users waiting in a skill group's queue", ["group"],
                             registry=REGISTRY, multiprocess_mode="mostrecent")
SERVICE_LONGEST_WAIT = Gauge("patron_service_longest_wait_seconds", "Longest wait in a skill group's queue",
                             ["group"], registry=REGISTRY, multiprocess_mode="mostrecent")
SERVICE_AGENTS = Gauge("patron_service_agents", "Agents of a skill group by state (online, serving, away, offline)",
                       ["group", "state"], registry=REGISTRY, multiprocess_mode="mostrecent")


def observe_request(method, route, status, seconds):
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def render():
    """The exposition text; merged over all gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        from prometheus_client import multiprocess
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)
    return generate_latest(REGISTRY)
