"""Factories shared by the service-desk tests: policy variants, agents, a clean floor, SSE reading."""
import contextlib
import json
import secrets

import yaml


def service_doc(app):
    import os
    with open(os.path.join(app.config["POLICY_DIR"], "service.yaml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@contextlib.contextmanager
def service_policy(app, **changes):
    """Apply the sample policy set with the service policy changed (dotted keys: ``groups.general.queue_cap``).

    Restores the set active before afterwards. Other processes (workers, agents) adopt it within a second.
    The bot is off unless a change names it: these tests are about the queue, and other tests publish knowledge.
    """
    if not any(k.split(".")[0].split("__")[0] == "bot" for k in changes):
        changes["bot.enabled"] = False
    with policy_variant(app, {"service.yaml": changes}) as docs:
        yield docs["service.yaml"]


@contextlib.contextmanager
def policy_variant(app, edits):
    """Apply the active set with files of ``policies/`` edited and restore it afterwards (variants nest).

    ``edits``: {file name: {dotted key: value}} or {file name: fn(doc) editing the parsed document in place}.
    Yields {file name: the edited document}.
    """
    from app import policy
    from app.db import db
    with app.app_context(), db.connection_context():
        files = dict(policy.active().files)  # restored afterwards: variants nest
    variant, docs = dict(files), {}
    for name, edit in edits.items():
        key = next(k for k in files if k.endswith("policies/" + name))
        doc = docs[name] = yaml.safe_load(files[key])
        if callable(edit):
            edit(doc)
        else:
            for dotted, value in edit.items():
                parts = dotted.replace("__", ".").split(".")
                node = doc
                for p in parts[:-1]:
                    node = node.setdefault(p, {})
                node[parts[-1]] = value
        variant[key] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    with app.app_context(), db.connection_context():
        try:
            policy.apply(variant, "tests")
        except policy.PolicyInvalid as exc:
            raise AssertionError("\n".join(str(e) for e in exc.errors)) from None
    try:
        yield docs
    finally:
        with app.app_context(), db.connection_context():
            policy.apply(files, "tests")


TEST_GROUPS = {
    "tiny": {"name": "测试小队列", "department": "cs", "roles": ["qa_inspector"], "queue_cap": 2,
             "on_agent_timeout": "requeue", "on_user_timeout": "close", "requeue_boost": 10, "ticket_category": "投诉"},
}


def new_agent(app, roles=("agent_l1",), prefix="A"):
    """A fresh cs staff member (the database is shared by the session: unique staff_no)."""
    from app.db import db
    from app.services.tickets.staff import create_staff
    staff_no = f"{prefix}-{secrets.token_hex(4)}"
    with app.app_context(), db.connection_context():
        create_staff({"staff_no": staff_no, "name": f"客服{staff_no[-4:]}", "department": "cs", "roles": list(roles)})
    return staff_no


def clean_floor(app):
    """Close every open conversation and take every agent offline (tests share one database)."""
    from app.db import db
    from app.models.service import ServiceAgent, ServiceConversation
    with app.app_context(), db.connection_context():
        ServiceConversation.update(state="closed", close_reason="test-cleanup").where(
            ServiceConversation.state != "closed").execute()
        ServiceAgent.update(status="offline", serving=0).execute()


def as_agent(http, staff_no):
    return {"Patron-Act-As": staff_no}


def read_sse(resp, until, limit=200):
    """Events ({id, event, data}) from an open SSE response until ``until(event)`` is true (or ``limit``)."""
    out, cur = [], {}
    lines = getattr(resp, "_sse_lines", None)
    if lines is None:  # one iterator per response, unbuffered: events arrive one by one, never wait for a chunk
        lines = resp._sse_lines = resp.iter_lines(chunk_size=1)
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r")
        if line == "":
            if "data" in cur:
                ev = {"id": cur.get("id"), "event": cur.get("event"), "data": json.loads(cur["data"])}
                out.append(ev)
                if until(ev) or len(out) >= limit:
                    return out
            cur = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        cur[name] = value[1:] if value.startswith(" ") else value
    return out


@contextlib.contextmanager
def policy_files(app, changes):
    """Apply the active set with top-level keys of some files replaced: ``{"workforce.yaml": {"key": value}}``."""
    with policy_variant(app, {name: (lambda doc, fields=fields: doc.update(fields)) for name, fields in changes.items()}):
        yield


def make_conversation(agent, closed_at, channel="app", category="咨询", csat=None, handle_seconds=300, group="general"):
    """A closed conversation row an agent served (handled ``handle_seconds``, closed at ``closed_at``, naive UTC)."""
    import datetime as dt
    from app.models.service import ServiceConversation
    assigned = closed_at - dt.timedelta(seconds=handle_seconds)
    return ServiceConversation.create(
        user_id=f"u-{secrets.token_hex(6)}", group=group, channel=channel, state="closed", priority=0,
        policy_version="tests", facts="{}", topic="", queued_at=assigned, agent=agent, assigned_at=assigned,
        user_seen_at=closed_at, token_hash="x", closed_at=closed_at, close_reason="resolved",
        close_category=category, closed_by=agent, csat_score=csat, created_at=assigned).id


def compensate(conv_id, agent):
    """A paid red packet linked to the conversation (the QA stratum ``compensated``)."""
    from app.models.service import ServiceCompensation
    ServiceCompensation.create(user_id="u", staff_no=agent, amount_fen=500, reason="goodwill", conversation_id=conv_id,
                               state="paid", business_date="2025-03-01", policy_version="tests", rule="tests")
