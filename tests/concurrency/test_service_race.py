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


def _race(go, results_q, procs):
    """Start the race, collect one result per process, reap the processes."""
    try:
        go.set()
        return [results_q.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


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
        started = time.monotonic()
        results = _race(*start_agents(database_url, staff))
        elapsed = time.monotonic() - started
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


AUTO_AGENTS, AUTO_DISPATCHERS, AUTO_USERS = 8, 3, 300


def test_auto_assignment_across_processes_never_double_assigns(app, database_url):
    """Auto-assignment (``assignment: auto``) racing across OS processes: 8 agent processes come online at once
    (each going online dispatches) and finish what they are given (each close dispatches), while 3 more
    processes call dispatch in a loop. A user is never given to two agents (one logged ``auto`` decision and
    one ``assigned`` event per user, closed by that agent) and an agent's lock is never double-taken (every
    decision saw the agent's lock open — serving 0 of capacity 1 — and no agent ever held two users)."""
    import json
    from app.db import db
    from app.models.policy import Decision
    from app.models.service import ServiceAgent, ServiceConversation, ServiceEvent
    from tests.concurrency.service_agent import start_auto
    clean_floor(app)
    with service_policy(app, calendar="always", assignment="auto", user_timeout_seconds=3600,
                        agent_timeout_seconds=3600, groups__general__queue_cap=5000):
        staff = [new_agent(app, prefix="AU") for _ in range(AUTO_AGENTS)]
        queued = _queue_users(app, AUTO_USERS)
        assert len(queued) == AUTO_USERS
        results = _race(*start_auto(database_url, staff, AUTO_DISPATCHERS))
        assert [r["error"] for r in results if "error" in r] == []
        agents = [r for r in results if r["staff_no"] is not None]
        served = [cid for r in agents for cid in r["served"]]
        assert sorted(served) == sorted(queued)  # every user served, each exactly once
        assert max(r["max_held"] for r in agents) == 1  # no agent ever held two users
        by = {cid: r["staff_no"] for r in agents for cid in r["served"]}
        with app.app_context(), db.connection_context():
            rows = list(ServiceConversation.select().where(ServiceConversation.id.in_(list(queued))))
            assert {c.state for c in rows} == {"closed"} and all(c.closed_by == by[c.id] for c in rows)
            decisions = [d for d in Decision.select().where((Decision.ruleset == "service") & (Decision.rule == "auto")
                                                            & Decision.subject.startswith("service:conversation:"))
                         if int(d.subject.rsplit(":", 1)[1]) in queued]
            subjects = [d.subject for d in decisions]
            assert len(subjects) == len(set(subjects)) == AUTO_USERS  # one assignment per user
            for d in decisions:
                inputs, outcome = json.loads(d.inputs), json.loads(d.outcome)
                assert (inputs["agent_serving"], inputs["agent_capacity"]) == (0, 1), d.subject  # lock was open
                assert outcome["assigned_to"] == by[int(d.subject.rsplit(":", 1)[1])]
            assigned = (ServiceEvent.select(ServiceEvent.conversation).where(
                (ServiceEvent.kind == "assigned") & ServiceEvent.conversation.in_(list(queued))))
            counts = {}
            for e in assigned:
                counts[e.conversation] = counts.get(e.conversation, 0) + 1
            assert set(counts.values()) == {1} and len(counts) == AUTO_USERS
            assert all(a.serving == 0 for a in ServiceAgent.select().where(ServiceAgent.staff_no.in_(staff)))
    clean_floor(app)
