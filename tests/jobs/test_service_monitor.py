"""The monitor job on a real RQ worker: a queue over its threshold opens one alert (one outbox message) however
many times the minute job runs, and the worker sets the floor gauges it evaluated from."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Http, make_token
from tests.service_factories import clean_floor, policy_variant, service_doc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis

GROUP = {"name": "监控作业测试组", "department": "cs", "roles": ["agent_l1"], "queue_cap": 10,
         "on_agent_timeout": "requeue", "on_user_timeout": "close", "requeue_boost": 10, "ticket_category": "投诉"}


def test_worker_monitor_opens_one_alert_for_repeated_runs(app, server, database_url, redis_url, jobs_queue):
    import jobs
    from app.db import db
    from app.models.outbox import OutboxMessage
    from app.models.service import ServiceAlert
    clean_floor(app)
    groups = dict(service_doc(app)["groups"], mj=GROUP)
    with policy_variant(app, {"service.yaml": {"calendar": "always", "assignment": "pull", "bot.enabled": False,
                                               "groups": groups},
                              "monitoring.yaml": {"alerts.groups": {"mj": {"queue_length": 2}}}}):
        api = Http(server, make_token(["service:write"], "monitor-job-test"))
        for _ in range(2):
            r = api.post("/v1/service/conversations", json={"user_id": f"mj-{secrets.token_hex(4)}", "group": "mj"})
            assert r.status_code == 201, r.text
        with app.app_context():
            refs = [jobs.enqueue("jobs.service.monitor") for _ in range(3)]
        env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url,
                   PYTHONPATH=str(ROOT), PATRON_LOG_LEVEL="WARNING")
        worker = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--burst", "--queues", jobs_queue],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert worker.returncode == 0, worker.stderr[-3000:]
        assert len(refs) == 3
        with app.app_context(), db.connection_context():
            mine = list(ServiceAlert.select().where(ServiceAlert.scope == "mj"))
            assert [(a.metric, a.state, a.value, a.rule) for a in mine] == [
                ("queue_length", "open", 2, "alerts.groups.mj.queue_length")]
            sent = OutboxMessage.select().where(OutboxMessage.subject == f"service:alert:{mine[0].id}")
            assert [m.topic for m in sent] == ["service.alert.opened"]
    clean_floor(app)
    with app.app_context(), db.connection_context():
        from app.services.service import monitoring
        out = monitoring.evaluate()  # the queue is empty again (and the threshold gone): recovered once
        assert [a["id"] for a in out["recovered"] if a["scope"] == "mj"] == [mine[0].id]
