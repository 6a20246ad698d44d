"""Tickets end to end over HTTP: routing by rule, two-level approval, forbidden transitions, SLA pause, stats."""
import csv
import io
import uuid

import pytest

from tests.conftest import Http, make_token, sign_in


def uid(prefix="x"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def people(server, admin_token):
    """Unique staff for this module: agent, finance specialist, supervisor, manager, and a dual-role approver."""
    http = Http(server, admin_token)
    s = uid("t")
    spec = {"agent": ("cs", ["agent_l1", "agent_l2"]), "fin": ("finance", ["finance_specialist"]),
            "sup": ("finance", ["supervisor"]), "mgr": ("finance", ["finance_manager"]),
            "dual": ("finance", ["supervisor", "finance_manager"]), "l1": ("cs", ["agent_l1"])}
    out = {}
    for name, (dept, roles) in spec.items():
        staff_no = f"{name}-{s}"
        r = http.post("/v1/staff", json={"staff_no": staff_no, "name": name, "department": dept, "roles": roles})
        assert r.status_code == 201, r.text
        out[name] = staff_no
    return out


_sessions = {}


def as_staff(server, staff_no):
    """A signed-in session of that staff member (one per staff member for the module)."""
    if staff_no not in _sessions:
        _sessions[staff_no] = sign_in(server, staff_no)
    return _sessions[staff_no]


def create(http, key=None, **body):
    payload = {"category": "退款争议", "title": "退款金额不对", "body": "订单退款少退了", "user_id": uid("u"),
               "channel": "app", "amount_fen": 200000, "user": {"level": "金牌", "paid": False},
               "order_no": uid("o")}
    payload.update(body)
    r = http.post("/v1/tickets", json=payload, key=key or uid("k"))
    assert r.status_code == 201, r.text
    return r.json()


def step(http, tid, transition, by=None, comment=None, status=200):
    """Take a transition as staff member ``by`` (signed in), or as the calling service when None."""
    body = {"transition": transition}
    if comment:
        body["comment"] = comment
    caller = as_staff(http.base, by) if by else http
    r = caller.post(f"/v1/tickets/{tid}/transitions", json=body)
    assert r.status_code == status, r.text
    return r.json()


def approve(http, tid, by, decision="approve", comment=None, status=200):
    body = {"decision": decision}
    if comment:
        body["comment"] = comment
    r = as_staff(http.base, by).post(f"/v1/tickets/{tid}/approvals", json=body)
    assert r.status_code == status, r.text
    return r.json()


def test_refund_dispute_routed_approved_twice_processed_closed(http, people):
    t = create(http)
    assert (t["department"], t["queue"]) == ("finance", "refund-disputes")
    assert t["routing"]["rule"] == "refund_dispute_large" and t["routing"]["priority_rule"] == "large_amount_vip"
    assert t["priority"] == "P1" and "大额退款" in t["tags"]
    assert t["state"] == "new" and t["user_status"] == "已受理"
    assert t["sla"]["response"]["metric"] == "first_response" and t["sla"]["resolution"]["due_at"]

    tid = t["id"]
    t = step(http, tid, "accept", by=people["agent"])
    assert t["state"] == "investigating" and t["sla"]["first_response_at"]
    t = step(http, tid, "submit_for_approval", by=people["fin"])
    assert t["state"] == "approval_l1" and t["assignee"]  # auto-assigned to a finance supervisor
    t = approve(http, tid, people["sup"], comment="核实无误")
    assert t["state"] == "approval_l2"  # 2,000.00 CNY needs the second level
    # the supervisor cannot take the manager's step
    r = as_staff(http.base, people["sup"]).post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"})
    assert r.status_code == 403 and r.json()["required_permission"] == "ticket.approve.l2"
    t = approve(http, tid, people["mgr"], comment="同意退款")
    assert t["state"] == "processing" and t["user_status"] == "退款处理中"
    t = step(http, tid, "refund_done", by=people["fin"])
    assert t["state"] == "resolved" and t["resolved_at"]
    t = step(http, tid, "close")
    assert t["state"] == "closed" and t["terminal"] and t["allowed_transitions"] == []

    approvals = http.get(f"/v1/tickets/{tid}/approvals").json()["items"]
    assert [(a["level"], a["decision"], a["by"]) for a in approvals] == [
        (1, "approve", people["sup"]), (2, "approve", people["mgr"])]
    hist = http.get(f"/v1/tickets/{tid}/history").json()["items"]
    states = [(h["from"], h["to"]) for h in hist if h["field"] == "state"]
    assert states == [(None, "new"), ("new", "investigating"), ("investigating", "approval_l1"),
                      ("approval_l1", "approval_l2"), ("approval_l2", "processing"),
                      ("processing", "resolved"), ("resolved", "closed")]
    routed = [h for h in hist if h["kind"] == "routed"][0]
    assert routed["rule"] == "refund_dispute_large" and routed["to"] == "finance/refund-disputes"
    assert routed["policy_version"]
    approvals_hist = [h for h in hist if h["kind"] == "approval"]
    assert [h["rule"] for h in approvals_hist] == ["refund_dispute.approve_l1", "refund_dispute.approve_l2"]
    assert all(h["policy_version"] for h in hist if h["field"] == "state")
    view = http.get(f"/v1/tickets/{tid}/status").json()
    assert view["status"] == "已关闭" and view["closed"]
    assert any(n["text"] == "退款已完成" for n in view["notices"])
    # the decision log answers "why did this ticket go to finance?", and explain replays it
    logged = http.get("/v1/decisions", params={"subject": f"ticket:{tid}"}).json()["items"]
    assert [(d["ruleset"], d["rule"]) for d in logged] == [("ticket_routing", "refund_dispute_large"),
                                                            ("ticket_priority", "large_amount_vip")]
    assert logged[0]["version"] == routed["policy_version"]
    inputs = http.get(f"/v1/tickets/{tid}").json()["routing"]["inputs"]
    explained = http.post("/v1/decisions/explain", json={"ruleset": "ticket_routing", "facts": inputs}).json()
    assert explained["rule"] == "refund_dispute_large"


def test_create_is_idempotent(http):
    key = uid("k")
    body = {"category": "发票", "title": "补开发票", "user_id": uid("u"), "channel": "web"}
    r1 = http.post("/v1/tickets", json=body, key=key)
    r2 = http.post("/v1/tickets", json=body, key=key)
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["id"] == r2.json()["id"] and r2.headers.get("Idempotent-Replayed") == "true"
    r3 = http.post("/v1/tickets", json=dict(body, title="另一个"), key=key)
    assert r3.status_code == 409 and r3.json()["code"] == "idempotency-key-reused"
    r4 = http.post("/v1/tickets", json=body, key=False)
    assert r4.status_code == 428 and r4.json()["code"] == "idempotency-key-required"
    t = r1.json()
    assert (t["department"], t["queue"], t["priority"]) == ("finance", "invoices", "P4")


def test_small_refund_needs_one_level(http, people):
    t = create(http, amount_fen=10000, user={"level": "注册", "paid": False})
    assert t["routing"]["rule"] == "refund_dispute" and t["priority"] == "P3"
    tid = t["id"]
    step(http, tid, "accept", by=people["agent"])
    step(http, tid, "submit_for_approval", by=people["fin"])
    t = approve(http, tid, people["sup"])
    assert t["state"] == "processing"


def test_rejection_and_distinct_approvers(http, people):
    t = create(http)
    tid = t["id"]
    step(http, tid, "accept", by=people["agent"])
    step(http, tid, "submit_for_approval", by=people["fin"])
    approve(http, tid, people["dual"])
    r = as_staff(http.base, people["dual"]).post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"})
    assert r.status_code == 403 and r.json()["code"] == "approver-not-distinct"
    r = as_staff(http.base, people["mgr"]).post(f"/v1/tickets/{tid}/approvals", json={"decision": "reject"})
    assert r.status_code == 422 and r.json()["code"] == "comment-required"
    t = approve(http, tid, people["mgr"], decision="reject", comment="凭证不足")
    assert t["state"] == "rejected" and t["user_status"] == "申请未通过"


def test_forbidden_transitions_are_clear_problems(http, people):
    t = create(http, category="物流/配送", title="快递三天没动", amount_fen=0, user={"level": "注册", "paid": False})
    assert t["department"] == "logistics"
    tid = t["id"]
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "close"})
    assert r.status_code == 409
    p = r.json()
    assert p["code"] == "transition-not-allowed" and p["state"] == "new"
    assert "start" in p["allowed"] and "start" in p["detail"]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "no_such_step"})
    assert r.status_code == 409 and r.json()["code"] == "transition-not-allowed"
    r = as_staff(http.base, people["l1"]).post(f"/v1/tickets/{tid}/transitions",
                                               json={"transition": "cancel", "comment": "x"})
    assert r.status_code == 403 and r.json()["code"] == "role-not-allowed"
    assert r.json()["required_roles"] == ["supervisor", "agent_l2"]
    # a step with roles is taken by a person: a service key alone cannot take it
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "cancel"})
    assert r.status_code == 403 and r.json()["code"] == "staff-required"
    # nobody names the actor in the body any more
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "cancel", "by": people["sup"]})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = as_staff(http.base, people["sup"]).post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"})
    assert r.status_code == 409 and r.json()["code"] == "no-approval-pending"
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "BAD NAME"})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = http.post("/v1/tickets/999999999/transitions", json={"transition": "start"})
    assert r.status_code == 404
    step(http, tid, "start", by=people["agent"])
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "resolve"})
    assert r.status_code == 422 and r.json()["code"] == "comment-required"


def test_waiting_on_user_pauses_sla_and_comments(http, people):
    t = create(http, category="账户/会员", title="积分没到账", amount_fen=0, user={"level": "注册", "paid": False})
    tid, user = t["id"], t["user"]["id"]
    assert t["department"] == "membership"
    agent = as_staff(http.base, people["agent"])
    r = agent.post(f"/v1/tickets/{tid}/comments", json={"visibility": "public", "body": "您好，正在核实"})
    assert r.status_code == 201 and r.json()["author"] == people["agent"]
    t = http.get(f"/v1/tickets/{tid}").json()
    assert t["sla"]["first_response_at"] and t["sla"]["response"]["metric"] is None
    r = http.post(f"/v1/tickets/{tid}/comments", json={"author": user, "author_kind": "user", "body": "还没到"})
    assert r.status_code == 201 and r.json()["visibility"] == "public"
    t = http.get(f"/v1/tickets/{tid}").json()
    assert t["sla"]["response"]["metric"] == "next_response"
    r = http.post(f"/v1/tickets/{tid}/comments", json={"author": "someone-else", "author_kind": "user", "body": "x"})
    assert r.status_code == 403
    agent.post(f"/v1/tickets/{tid}/comments", json={"body": "内部备注"})
    step(http, tid, "start", by=people["agent"])
    t = step(http, tid, "request_info", by=people["agent"])
    assert t["sla"]["paused"] and t["user_status"] == "待您补充信息"
    t = step(http, tid, "user_replied")
    assert not t["sla"]["paused"]
    view = http.get(f"/v1/tickets/{tid}/status", params={"user_id": user}).json()
    assert [c["body"] for c in view["replies"]] == ["您好，正在核实", "还没到"]  # internal note hidden
    assert http.get(f"/v1/tickets/{tid}/status", params={"user_id": "other"}).status_code == 404
    page = http.get("/v1/ticket-notices", params={"user_id": user}).json()
    notices = page["items"]
    assert any(n["text"] == "请补充工单所需信息" for n in notices) and page["next_cursor"] is None
    assert [n["id"] for n in notices] == sorted((n["id"] for n in notices), reverse=True)
    seen, cursor = [], None
    for _ in notices:  # a page of one at a time walks the same notices, each once
        page = http.get("/v1/ticket-notices", params={"user_id": user, "limit": 1,
                                                      **({"cursor": cursor} if cursor else {})}).json()
        seen += page["items"]
        cursor = page["next_cursor"]
    assert seen == notices and cursor is None
    r = http.post(f"/v1/tickets/{tid}/attachments", json={"ref": "s3://bucket/photo.jpg", "name": "photo.jpg",
                                                          "content_type": "image/jpeg", "size_bytes": 1234})
    assert r.status_code == 201
    assert http.get(f"/v1/tickets/{tid}/attachments").json()["items"][0]["ref"] == "s3://bucket/photo.jpg"
    internal = http.get(f"/v1/tickets/{tid}/comments", params={"visibility": "internal"}).json()["items"]
    assert [c["body"] for c in internal] == ["内部备注"]


def test_reopen_within_window_and_assign(http, people):
    t = create(http, category="物流/配送", title="丢件", amount_fen=0, user={"level": "注册", "paid": False})
    tid = t["id"]
    step(http, tid, "start")
    step(http, tid, "resolve", comment="已补发")
    t = step(http, tid, "reopen")
    assert t["state"] == "in_progress" and t["resolved_at"] is None and t["sla"]["resolution"]["due_at"]
    r = http.post(f"/v1/tickets/{tid}/assign", json={"department": "cs", "queue": "escalations",
                                                     "assignee": people["agent"]})
    assert r.status_code == 200, r.text
    t = r.json()
    assert (t["department"], t["queue"], t["assignee"]) == ("cs", "escalations", people["agent"])
    r = http.post(f"/v1/tickets/{tid}/assign", json={"department": "cs", "queue": "nope"})
    assert r.status_code == 422 and r.json()["code"] == "unknown-queue"
    hist = http.get(f"/v1/tickets/{tid}/history").json()["items"]
    assert any(h["kind"] == "assigned" and h["to"] == people["agent"] for h in hist)


def test_validation_and_unknown_category(http):
    r = http.post("/v1/tickets", json={"title": "", "channel": "pigeon"}, key=uid("k"))
    assert r.status_code == 422
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert {"", "/title", "/channel"} <= pointers
    r = http.post("/v1/tickets", json={"category": "不存在", "title": "x", "user_id": "u"}, key=uid("k"))
    assert r.status_code == 422 and r.json()["code"] == "unknown-category" and "投诉" in r.json()["allowed"]


def test_scopes(server, http):
    reader = Http(server, make_token(["tickets:read"]))
    body = {"category": "投诉", "title": "投诉客服", "user_id": uid("u")}
    r = reader.post("/v1/tickets", json=body, key=uid("k"))
    assert r.status_code == 403 and r.json()["required_scope"] == "tickets:write"
    assert reader.get("/v1/tickets?limit=1").status_code == 200
    writer = Http(server, make_token(["tickets:write"]))
    r = writer.post("/v1/tickets", json=body, key=uid("k"))
    assert r.status_code == 201 and r.json()["priority"] == "P2" and "客诉" in r.json()["tags"]
    assert Http(server, make_token(["ledger:read"])).get("/v1/tickets").status_code == 403


def test_list_filters_and_cursor(http):
    user = uid("u")
    ids = [create(http, category="投诉", title=f"投诉{i}", user_id=user, amount_fen=0,
                  user={"level": "钻石", "paid": False})["id"] for i in range(3)]
    page1 = http.get("/v1/tickets", params={"user_id": user, "limit": 2}).json()
    assert [t["id"] for t in page1["items"]] == ids[::-1][:2] and page1["next_cursor"]
    page2 = http.get("/v1/tickets", params={"user_id": user, "limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [t["id"] for t in page2["items"]] == [ids[0]] and page2["next_cursor"] is None
    vip = http.get("/v1/tickets", params={"user_id": user, "queue": "vip", "open": "true",
                                          "priority": "P2"}).json()["items"]
    assert len(vip) == 3
    assert http.get("/v1/tickets", params={"user_id": user, "sla": "breached"}).json()["items"] == []
    assert http.get("/v1/tickets", params={"limit": 0}).status_code == 422
    assert http.get("/v1/tickets", params={"open": "maybe"}).status_code == 422


def test_stats_json_and_csv(http, people):
    t = create(http, category="发票", title="发票抬头错了", amount_fen=0, user={"level": "注册", "paid": False})
    step(http, t["id"], "start", by=people["agent"])
    step(http, t["id"], "resolve", by=people["agent"], comment="已换开")
    data = http.get("/v1/ticket-stats").json()
    assert data["volume"]["by_category"]["发票"] >= 1 and data["volume"]["total"] >= 1
    assert data["backlog"]["total"] >= 1 and set(data["backlog"]["by_age"]) >= {"lt_1h", "ge_7d"}
    inv = data["sla"]["by_category"]["发票"]
    assert inv["resolved"] >= 1 and inv["resolution_met_pct"] is not None
    assert data["times"]["first_response_avg_secs"] is not None
    r = http.get("/v1/ticket-stats", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the labels right
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert any(row["section"] == "volume" and row["key"] == "发票" for row in rows)
    assert http.get("/v1/ticket-stats", params={"from": "garbage"}).status_code == 422


def test_workflows_departments_staff(http, people):
    wf = http.get("/v1/ticket-workflows").json()
    assert set(wf["categories"]) == {"物流/配送", "退换货", "退款争议", "发票", "商品质量", "账户/会员", "投诉", "赔付审批"}
    depts = {d["code"] for d in http.get("/v1/departments").json()["items"]}
    assert {"cs", "finance", "logistics"} <= depts
    r = http.post("/v1/staff", json={"staff_no": uid("s"), "name": "x", "department": "nope", "roles": ["agent_l1"]})
    assert r.status_code == 422 and r.json()["code"] == "unknown-department"
    r = http.post("/v1/staff", json={"staff_no": uid("s"), "name": "x", "department": "cs", "roles": ["wizard"]})
    assert r.status_code == 422 and r.json()["code"] == "unknown-role"
    r = http.post("/v1/staff", json={"staff_no": people["agent"], "name": "x", "department": "cs",
                                     "roles": ["agent_l1"]})
    assert r.status_code == 409
    sups = http.get("/v1/staff", params={"department": "finance", "role": "supervisor", "limit": 200}).json()
    assert people["sup"] in {s["staff_no"] for s in sups["items"]}
    # by staff_no, a page at a time: the cursor is the last staff_no of a full page
    first = http.get("/v1/staff", params={"limit": 2}).json()
    assert [s["staff_no"] for s in first["items"]] == sorted(s["staff_no"] for s in first["items"])
    assert first["next_cursor"] == first["items"][-1]["staff_no"]
    after = http.get("/v1/staff", params={"limit": 2, "cursor": first["next_cursor"]}).json()["items"]
    assert after and after[0]["staff_no"] > first["next_cursor"]


def test_reopen_window_closes_and_order_status_rule(http, people, db_conn):
    import datetime as dt

    from app.models.tickets import Ticket
    t = create(http, category="物流/配送", title="快递没收到", amount_fen=0, order_status="配送中",
               user={"level": "注册", "paid": False})
    assert t["routing"]["priority_rule"] == "lost_in_delivery" and t["priority"] == "P2" and "疑似丢件" in t["tags"]
    tid = t["id"]
    step(http, tid, "start")
    step(http, tid, "resolve", comment="已补发")
    entered = Ticket.get_by_id(tid).state_entered_at
    Ticket.update(state_entered_at=entered - dt.timedelta(hours=169)).where(Ticket.id == tid).execute()
    r = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "reopen"})
    assert r.status_code == 409 and r.json()["code"] == "transition-not-allowed"
    assert r.json()["allowed"] == ["close"]


def test_confirmed_defect_compensates_through_the_ledger_once(http, people):
    asp = f"as-{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/staff", json={"staff_no": asp, "name": "售后", "department": "aftersales",
                                        "roles": ["aftersales_specialist"]}).status_code == 201
    t = create(http, category="商品质量", title="杯子有裂纹", amount_fen=5900, user={"level": "注册", "paid": False})
    tid, user = t["id"], t["user"]["id"]
    assert (t["department"], t["queue"]) == ("aftersales", "quality")
    step(http, tid, "assess", by=asp)
    t = step(http, tid, "confirm_defect", by=asp, comment="确认质量问题")
    assert t["state"] == "compensating"
    red = [a for a in http.get(f"/v1/ledger/customers/{user}/balances").json()["accounts"]
           if a["asset"] == "RED_PACKET"][0]
    assert red["sub_accounts"]["available"] == 1000
    lots = http.get(f"/v1/ledger/customers/{user}/lots").json()
    assert sum(lot["amount"] for lot in lots.get("items", lots.get("lots", []))
               if lot["asset"] == "RED_PACKET") == 1000
    hist = http.get(f"/v1/tickets/{tid}/history").json()["items"]
    comp = [h for h in hist if h["kind"] == "compensated"]
    assert len(comp) == 1 and comp[0]["rule"] == "quality.compensating.on_enter" and comp[0]["detail"]["journal_id"]
    logged = http.get("/v1/decisions", params={"subject": f"ticket:{tid}"}).json()["items"]
    assert [d["rule"] for d in logged if d["ruleset"] == "tickets"] == ["quality.compensating.on_enter"]
    step(http, tid, "compensated")
    t = step(http, tid, "reopen", comment="又坏了")
    assert t["state"] == "assessing"
    # looping the workflow (re-confirm, re-enter compensating) pays nothing more: once per ticket and rule
    for _ in range(2):
        t = step(http, tid, "confirm_defect", by=asp, comment="再次确认")
        assert t["state"] == "compensating"
        step(http, tid, "compensated")
        step(http, tid, "reopen", comment="又坏了")
    red = [a for a in http.get(f"/v1/ledger/customers/{user}/balances").json()["accounts"]
           if a["asset"] == "RED_PACKET"][0]
    assert red["sub_accounts"]["available"] == 1000
    hist = http.get(f"/v1/tickets/{tid}/history").json()["items"]
    assert len([h for h in hist if h["kind"] == "compensated"]) == 1
    journal = http.get(f"/v1/ledger/journals/{comp[0]['detail']['journal_id']}").json()
    assert journal["actor"] == f"staff:{asp}"  # the person whose confirmation paid, not a faceless system


def test_compensation_requires_the_permission(http, people):
    """A role the workflow allows but the access policy does not let pay (an agent_l2 may assess, not confirm)."""
    t = create(http, category="商品质量", title="裂纹", amount_fen=5900, user={"level": "注册", "paid": False})
    step(http, t["id"], "assess", by=people["agent"])
    r = as_staff(http.base, people["agent"]).post(f"/v1/tickets/{t['id']}/transitions",
                                                  json={"transition": "confirm_defect", "comment": "x"})
    assert r.status_code == 403 and r.json()["required_permission"] in ("ticket.approve.l1", "compensation.issue")
