"""`patron serve` writes one format: every line on stderr, gunicorn's own included, is a JSON object."""
import json

import requests


def test_every_server_log_line_is_json(demo_instance):
    r = requests.get(demo_instance.base + "/v1/policies/active",
                     headers={"Authorization": f"Bearer {demo_instance.key}"}, timeout=30)
    assert r.status_code == 200
    lines = [line for line in demo_instance.server_log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any plain-text line
    loggers = {rec["logger"] for rec in records}
    assert "gunicorn.error" in loggers  # gunicorn's start-up lines ("Listening at: ...")
    assert any(rec["msg"].startswith("Listening at: http://127.0.0.1:") for rec in records)
    assert "patron.http" in loggers or "patron.serve" in loggers
