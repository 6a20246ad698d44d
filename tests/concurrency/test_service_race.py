"""Race: 16 agents in separate processes take from 1,000 waiting users, decided in the database.

Never two agents for one user, never one agent locked twice, nobody skipped (each agent takes users in
queue order), every user served exactly once.
"""
import datetime as dt
import os
import random
import time

import pytest

from tests.service_factories import clean_floor, new_agent, service_policy

AGENTS, USERS = 16, 1000


def _queue_users(app, n):
    """n waiting users (a factory writing queue rows directly: the race is about taking, not asking)."""
    from app import policy
    from app.db import db, write_transaction
    from app.models.service import ServiceConversation
    from app.platform import clock
    from app.services.service.desk import token_hash
    now = clock.now()
    rnd = random.Random(7)
    rows = [{"user_id": f"race-{i}-{os.getpid()}-{now.timestamp()}", "group": "general", "channel": "app",
             "state": "queued", "priority": rnd.choice([0, 0, 0, 40, 60]), "priority_rule": "test",
             "policy_version": policy.active_version(), "facts": "{}", "topic": "",
             "queued_at": now - dt.timedelta(milliseconds=n - i), "user_seen_at": now,
             "token_hash": token_hash(f"t{i}"), "last_seq": 0, "requeues": 0, "created_at": now}
            for i in range(n)]
    with app.app_context(), db.connection_context(), write_transaction():
        for i in range(0, n, 200):
            ServiceConversation.insert_many(rows[i:i + 200]).execute()
    with app.app_context(), db.connection_context():
        return {c.id: c for c in ServiceConversation.select().where(ServiceConversation.state == "queued")}


def test_sixteen_agent_processes_race_over_a_thousand_waiting_users(app, database_url):
    from app.db import db
    from app.models.policy import Decision
    from app.models.service import ServiceAgent, ServiceConversation
    clean_floor(app)
    with service_policy(app, calendar="always", assignment="pull", user_timeout_seconds=3600,
                        agent_timeout_seconds=3600, groups__general__queue_cap=5000):
        staff = [new_agent(app, prefix="R") for _ in range(AGENTS)]
        queued = _queue_users(app, USERS)
        assert len(queued) == USERS
        from tests.concurrency.service_agent import start_agents
        go, results_q, procs = start_agents(database_url, staff)
        try:
            started = time.monotonic()
            go.set()
            results = [results_q.get(timeout=300) for _ in staff]
            elapsed = time.monotonic() - started
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
        assert [r["error"] for r in results if "error" in r] == []
        served = [row[0] for r in results for row in r["served"]]
        assert len(served) == USERS and set(served) == set(queued)  # every user once, nobody twice
        assert [v for r in results for v in r["violations"]] == []  # an agent never held two users
        for r in results:  # nobody skipped: each agent's takes follow queue order (the queue only shrinks)
            keys = [(-queued[cid].priority, queued[cid].queued_at, cid) for cid, _, _ in r["served"]]
            assert keys == sorted(keys), r["staff_no"]
        with app.app_context(), db.connection_context():
            rows = list(ServiceConversation.select().where(ServiceConversation.id.in_(list(queued))))
            assert {c.state for c in rows} == {"closed"} and all(c.closed_by in staff for c in rows)
            by = {cid: r["staff_no"] for r in results for cid, _, _ in r["served"]}
            assert all(c.closed_by == by[c.id] for c in rows)
            pulls = (Decision.select(Decision.subject).where((Decision.ruleset == "service") & (Decision.rule == "pull")
                                                             & Decision.subject.startswith("service:conversation:")))
            subjects = [d.subject for d in pulls if int(d.subject.rsplit(":", 1)[1]) in queued]
            assert len(subjects) == len(set(subjects)) == USERS  # one logged assignment per user
            assert all(a.serving == 0 for a in ServiceAgent.select().where(ServiceAgent.staff_no.in_(staff)))
        print(f"race: {USERS} users, {AGENTS} agent processes, {elapsed:.1f} s")
    clean_floor(app)
