"""Every metric the README documents has a value: on the web server's /metrics, and job counters from a real
RQ worker on its own metrics port."""
import os
import re
import subprocess
import sys
import time
import uuid

import requests

import jobs
from tests.instance import ROOT


def documented_metrics():
    """The metric names listed in the README's Metrics bullet (Operations / production)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("- **Metrics**"):]
    section = section[:section.index("\n- **", 5)]
    names = sorted(set(re.findall(r"`(patron_[a-z_]+)", section)))
    assert len(names) >= 4, names
    return names


def _samples(text, name, minimum=0):
    """Sample lines of one metric family (histograms: its _count) with a value >= minimum."""
    wanted = name + "_count" if f"# TYPE {name} histogram" in text else name
    return [line for line in text.splitlines()
            if line.startswith(wanted) and (line[len(wanted)] in "{ ")
            and float(line.rsplit(" ", 1)[1]) >= minimum]


def test_every_documented_metric_has_a_value_on_the_web_server(app, http, db_conn):
    # a request, a decision (ticket routing logs one), an in-process job
    r = http.post("/v1/tickets", key="m-" + uuid.uuid4().hex,
                  json={"category": "发票", "title": "补开发票", "user_id": "u-metrics", "channel": "app"})
    assert r.status_code == 201, r.text
    assert jobs.enqueue("jobs.platform.prune_job_runs").status == "succeeded"
    text = http.get("/metrics").text
    for name in documented_metrics():  # an error counter may well be 0, but it must be there
        assert _samples(text, name), f"{name} is documented but has no value on /metrics"
    for name in ("patron_http_requests_total", "patron_http_request_seconds", "patron_jobs_total",
                 "patron_decisions_total"):  # what this test just did
        assert _samples(text, name, minimum=1), f"{name} did not count"
    assert re.search(r'patron_decisions_total\{ruleset="ticket_routing"\} [1-9]', text)


def test_worker_serves_its_job_metrics(app, db_conn, jobs_queue, redis_url, database_url):
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url,
               PATRON_JOBS_QUEUE=jobs_queue, PYTHONPATH=str(ROOT))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--no-cron", "--metrics-port", "0"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "worker exited before serving metrics"
            found = re.search(r"worker metrics on (http://\S+)", line)
            url = found.group(1) if found else None
        assert url, "the worker never said where its metrics are"
        marker = uuid.uuid4().hex
        assert jobs.enqueue("jobs.platform.prune_job_runs", job_id="metrics-" + marker).status == "queued"
        pattern = re.compile(r'patron_jobs_total\{job="jobs\.platform\.prune_job_runs",outcome="succeeded"\} '
                             r"([0-9.]+)")
        while time.monotonic() < deadline:
            found = pattern.search(requests.get(url, timeout=10).text)
            if found and float(found.group(1)) >= 1:
                return
            time.sleep(0.3)
        raise AssertionError("patron_jobs_total never counted the job on the worker's /metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
