"""Staff identity end to end over HTTP: sign-in, lockout, expiry, logout, deactivation, act-as, permissions
generated from the route table, the double-approval attack, and the audit log."""
import datetime as dt
import os
import subprocess
import sys
import uuid

import pytest
import requests

from tests.conftest import STAFF_PASSWORD, Http, create_staff, make_token, set_staff_password, sign_in

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def uid(prefix="x"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def login(server, staff_no, password=STAFF_PASSWORD, **extra):
    return requests.post(server + "/v1/auth/login", json={"staff_no": staff_no, "password": password, **extra},
                         timeout=30)


@pytest.fixture()
def clock_at():
    """Move the server's clock (same process) and put it back afterwards."""
    from app.platform import clock
    yield clock.set_now
    clock.set_now(None)


def _audit(http, **params):
    r = http.get("/v1/audit", params=dict(params, limit=1000))
    assert r.status_code == 200, r.text
    return r.json()["items"]


# --- sessions ---------------------------------------------------------------------------------------

def test_login_me_logout(server, http):
    staff_no = create_staff(http, "cs", ["agent_l2"])
    set_staff_password(staff_no)
    r = login(server, staff_no)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("pts_") and body["token_type"] == "Bearer" and body["expires_at"]
    assert "csrf_token" not in body and "Set-Cookie" not in r.headers
    me_http = Http(server, body["token"])
    me = me_http.get("/v1/auth/me").json()
    assert me["staff_no"] == staff_no and me["department"] == "cs" and me["roles"] == ["agent_l2"]
    assert {"ticket.assign", "ticket.transition", "service.serve"} <= set(me["permissions"])
    assert "ticket.approve.l1" not in me["permissions"] and "tickets:read" in me["scopes"]
    assert me_http.get("/v1/tickets?limit=1").status_code == 200  # a scope from the access policy
    assert me_http.get("/v1/ledger/reconcile").status_code == 403  # no ledger scope for this role
    assert me_http.post("/v1/auth/logout").json() == {"sessions_ended": 1}
    r = me_http.get("/v1/auth/me")
    assert r.status_code == 401 and r.json()["code"] == "session-ended"
    # the stored token is a hash: the database never holds the secret
    from app.db import db
    from app.models.staff import StaffSession
    with db.connection_context():
        row = StaffSession.get(StaffSession.token_id == body["token"].split("_")[1])
    assert body["token"].split("_", 2)[2] not in (row.secret_hash,) and len(row.secret_hash) == 64
    # wrong password, unknown staff: the same answer
    assert login(server, staff_no, "Wrong-password-1").json()["code"] == "invalid-credentials"
    assert login(server, "nobody-" + staff_no).json()["code"] == "invalid-credentials"
    # an API key has no session to describe
    assert http.get("/v1/auth/me").json()["code"] == "session-required"


def test_cookie_session_needs_the_csrf_header_on_unsafe_methods(server, http):
    staff_no = create_staff(http, "cs", ["agent_l1"])
    set_staff_password(staff_no)
    s = requests.Session()
    r = s.post(server + "/v1/auth/login", json={"staff_no": staff_no, "password": STAFF_PASSWORD, "cookie": True})
    assert r.status_code == 200, r.text
    assert "token" not in r.json() and r.json()["csrf_token"]
    cookies = r.headers.get("Set-Cookie")
    session_cookie = [c for c in r.raw.headers.getlist("Set-Cookie") if c.startswith("patron_session=")][0]
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and cookies
    assert s.get(server + "/v1/auth/me").json()["staff_no"] == staff_no  # cookie only, no header
    t = http.post("/v1/tickets", json={"category": "发票", "title": "补开", "user_id": uid("u")}, key=uid("k")).json()
    r = s.post(f"{server}/v1/tickets/{t['id']}/comments", json={"body": "csrf?"})
    assert r.status_code == 403 and r.json()["code"] == "csrf-failed"
    r = s.post(f"{server}/v1/tickets/{t['id']}/comments", json={"body": "ok"},
               headers={"X-CSRF-Token": "forged-" + s.cookies["patron_csrf"]})
    assert r.status_code == 403 and r.json()["code"] == "csrf-failed"
    r = s.post(f"{server}/v1/tickets/{t['id']}/comments", json={"body": "ok"},
               headers={"X-CSRF-Token": s.cookies["patron_csrf"], "Idempotency-Key": uid("k")})
    assert r.status_code == 201 and r.json()["author"] == staff_no
    # the cookie's token is not a bearer token of its own (and vice versa)
    assert Http(server, s.cookies["patron_session"]).get("/v1/auth/me").status_code == 200
    r = s.post(server + "/v1/auth/logout", headers={"X-CSRF-Token": s.cookies.get("patron_csrf", ""),
                                                    "Idempotency-Key": uid("k")})
    assert r.status_code == 200
    assert requests.get(server + "/v1/auth/me", cookies={"patron_session": r.cookies.get("patron_session") or
                                                          "pts_x_y"}, timeout=30).status_code == 401


def test_lockout_backs_off_and_admin_reset_lifts_it(server, http, clock_at):
    staff_no = create_staff(http, "cs", ["agent_l1"])
    set_staff_password(staff_no)
    t0 = dt.datetime(2031, 3, 1, 2, 0, 0)
    clock_at(t0)
    for _ in range(4):
        assert login(server, staff_no, "Wrong-password-1").status_code == 401
    r = login(server, staff_no, "Wrong-password-1")  # the 5th failure locks (access policy: 5, 60 s)
    assert r.status_code == 423 and r.json()["code"] == "account-locked" and r.json()["retry_after_seconds"] == 61
    r = login(server, staff_no)  # even the right password while locked
    assert r.status_code == 423
    clock_at(t0 + dt.timedelta(seconds=61))
    for _ in range(5):
        r = login(server, staff_no, "Wrong-password-1")
    assert r.status_code == 423 and r.json()["retry_after_seconds"] == 121  # back-off: twice as long
    clock_at(t0 + dt.timedelta(seconds=61 + 121))
    assert login(server, staff_no).status_code == 200  # success resets the counters
    for _ in range(5):
        r = login(server, staff_no, "Wrong-password-1")
    assert r.json()["retry_after_seconds"] == 61
    # an administrator's reset lifts the lock; the temporary password must be changed before anything else
    r = http.post(f"/v1/staff/{staff_no}/password", json={})
    assert r.status_code == 200 and r.json()["must_change"] and r.json()["password"]
    temp = r.json()["password"]
    r = login(server, staff_no, temp)
    assert r.status_code == 200 and r.json()["staff"]["action_required"] == "password-change-required"
    s = Http(server, r.json()["token"])
    r = s.get("/v1/tickets?limit=1")
    assert r.status_code == 403 and r.json()["code"] == "password-change-required"
    r = s.post("/v1/auth/password", json={"current_password": temp, "new_password": "short"})
    assert r.status_code == 422 and r.json()["code"] == "weak-password"
    r = s.post("/v1/auth/password", json={"current_password": temp, "new_password": "A-much-better-1"})
    assert r.status_code == 200
    assert s.get("/v1/tickets?limit=1").status_code == 200
    failed = _audit(http, action="auth.login_failed", subject=f"staff:{staff_no}")
    assert len(failed) == 16 and {f["detail"]["reason"] for f in failed} == {"wrong-password", "locked"}
    assert all(f["actor"] == "anonymous" and f["request_id"] for f in failed)


def test_expiry_and_refresh(server, http, clock_at):
    staff_no = create_staff(http, "cs", ["agent_l1"])
    set_staff_password(staff_no)
    t0 = dt.datetime(2031, 4, 1, 1, 0, 0)
    clock_at(t0)
    first = login(server, staff_no).json()
    assert first["expires_at"] == "2031-04-01T09:00:00Z"  # ttl_minutes 480
    s1 = Http(server, first["token"])
    clock_at(t0 + dt.timedelta(minutes=470))
    r = s1.post("/v1/auth/refresh")
    assert r.status_code == 200 and r.json()["expires_at"] == "2031-04-01T16:50:00Z"
    s2 = Http(server, r.json()["token"])
    assert s1.get("/v1/auth/me").json()["code"] == "session-ended"  # refresh replaced the old token
    clock_at(t0 + dt.timedelta(minutes=949))
    assert s2.get("/v1/auth/me").status_code == 200
    clock_at(t0 + dt.timedelta(minutes=950))
    r = s2.get("/v1/auth/me")
    assert r.status_code == 401 and r.json()["code"] == "session-expired"
    assert s2.post("/v1/auth/refresh").status_code == 401


def _cli(database_url, *args):
    env = dict(os.environ, PATRON_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "app.cli", "--database-url", database_url, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_deactivation_and_key_revocation_act_at_once_in_another_process(server, http, database_url):
    staff_no = create_staff(http, "cs", ["agent_l1"])
    s = sign_in(server, staff_no)
    other = sign_in(server, staff_no, set_password=False)
    assert s.get("/v1/auth/me").status_code == 200
    # another process (the CLI) deactivates: the server has nothing cached and refuses the next request
    out = _cli(database_url, "staff", "deactivate", staff_no)
    assert out.returncode == 0, out.stderr
    assert "2 session(s) ended" in out.stdout
    for sess in (s, other):
        r = sess.get("/v1/auth/me")
        assert r.status_code == 401 and r.json()["code"] == "session-ended"
    assert login(server, staff_no).json()["code"] == "invalid-credentials"
    # an API key revoked by another process is refused on the very next request (no 10 s cache)
    token = make_token(["tickets:read"])
    k = Http(server, token)
    assert k.get("/v1/tickets?limit=1").status_code == 200
    out = _cli(database_url, "apikey", "revoke", token.split("_")[1])
    assert out.returncode == 0, out.stderr
    assert k.get("/v1/tickets?limit=1").status_code == 401
    rows = _audit(http, subject=f"api_key:{token.split('_')[1]}")
    assert [r["action"] for r in rows] == ["apikey.revoke"] and rows[0]["actor"].startswith("cli:")
    # deactivating over HTTP ends sessions too
    staff2 = create_staff(http, "cs", ["agent_l1"])
    s2 = sign_in(server, staff2)
    assert http.request("PATCH", f"/v1/staff/{staff2}", json={"active": False}).status_code == 200
    assert s2.get("/v1/auth/me").status_code == 401
    # the deactivate route does the same in one call; the staff record then reads inactive
    staff3 = create_staff(http, "cs", ["agent_l1"])
    s3 = sign_in(server, staff3)
    assert http.get(f"/v1/staff/{staff3}").json()["active"] is True
    r = http.post(f"/v1/staff/{staff3}/deactivate")
    assert r.status_code == 200, r.text
    assert r.json() == {"staff_no": staff3, "active": False, "sessions_ended": 1}
    assert s3.get("/v1/auth/me").status_code == 401
    r = http.get(f"/v1/staff/{staff3}")
    assert r.status_code == 200 and r.json()["staff_no"] == staff3 and r.json()["active"] is False


def test_cli_staff_create_and_passwd(server, http, database_url):
    staff_no = uid("cli")
    out = _cli(database_url, "staff", "create", staff_no, "--name", "命令行", "--department", "cs",
               "--roles", "agent_l1")
    assert out.returncode == 0, out.stderr
    password = out.stdout.split("password (shown once): ")[1].strip()
    assert login(server, staff_no, password).status_code == 200
    out = _cli(database_url, "staff", "passwd", staff_no)
    assert out.returncode == 0, out.stderr
    assert login(server, staff_no, password).status_code == 401
    assert login(server, staff_no, out.stdout.split("password (shown once): ")[1].strip()).status_code == 200
    out = _cli(database_url, "staff", "create", staff_no + "x", "--name", "x", "--department", "nope",
               "--roles", "agent_l1")
    assert out.returncode == 2 and "unknown-department" in out.stderr


def test_totp_second_factor(server, http, clock_at):
    from app.services import identity
    staff_no = create_staff(http, "cs", ["supervisor"])
    clock_at(dt.datetime(2031, 5, 1, 3, 0, 0))
    s = sign_in(server, staff_no)
    setup = s.post("/v1/auth/totp/setup").json()
    assert "secret" in setup, setup
    assert setup["otpauth_uri"].startswith("otpauth://totp/Patron:")
    secret = setup["secret"]
    assert s.post("/v1/auth/totp/confirm", json={"code": "000000" if identity.totp(secret) != "000000"
                                                 else "111111"}).status_code == 422
    assert s.post("/v1/auth/totp/confirm", json={"code": identity.totp(secret)}).status_code == 200
    r = login(server, staff_no)
    assert r.status_code == 401 and r.json()["code"] == "totp-required"
    # the code used to confirm cannot be used again (replay); the next step's code can
    assert login(server, staff_no, totp=identity.totp(secret)).status_code == 401
    clock_at(dt.datetime(2031, 5, 1, 3, 0, 30))
    r = login(server, staff_no, totp=identity.totp(secret))
    assert r.status_code == 200 and r.json()["staff"]["session"]["mfa"] is True
    # RFC 6238 appendix B vector (SHA-1, T=59 s -> 94287082 in 8 digits)
    import base64
    rfc_secret = base64.b32encode(b"12345678901234567890").decode()
    assert identity.hotp(rfc_secret, 59 // 30, digits=8) == "94287082"


def test_totp_policy_switch_restricts_sessions_until_enrolled(server, http, app, clock_at):
    from app import policy
    from app.db import db
    from app.services import identity
    files = policy.read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    switched = dict(files)
    switched["policies/access.yaml"] = files["policies/access.yaml"].replace(
        "required_for_roles: []", "required_for_roles: [finance_manager]")
    staff_no = create_staff(http, "finance", ["finance_manager"])
    set_staff_password(staff_no)
    clock_at(dt.datetime(2031, 6, 1, 3, 0, 0))
    with db.connection_context():
        policy.apply(switched, "tests")
    try:
        r = login(server, staff_no)
        assert r.status_code == 200 and r.json()["staff"]["action_required"] == "totp-enrolment-required"
        s = Http(server, r.json()["token"])
        assert s.get("/v1/tickets?limit=1").json()["code"] == "totp-enrolment-required"
        secret = s.post("/v1/auth/totp/setup").json()["secret"]
        assert s.post("/v1/auth/totp/confirm", json={"code": identity.totp(secret)}).status_code == 200
        assert s.get("/v1/tickets?limit=1").status_code == 200
    finally:
        with db.connection_context():
            policy.apply(files, "tests")


# --- actor from identity --------------------------------------------------------------------------------

def _refund_ticket(http):
    r = http.post("/v1/tickets", json={"category": "退款争议", "title": "退款少了", "user_id": uid("u"),
                                       "amount_fen": 200000, "user": {"level": "金牌", "paid": False}},
                  key=uid("k"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_double_approval_attack_is_refused(server, http):
    sup = create_staff(http, "finance", ["supervisor"])
    mgr = create_staff(http, "finance", ["finance_manager"])
    fin = create_staff(http, "finance", ["finance_specialist"])
    key = make_token(["tickets:write", "act-as"], name="attacker")
    svc = Http(server, key)
    tid = _refund_ticket(http)
    for name, who in (("accept", sup), ("submit_for_approval", fin)):
        r = svc.post(f"/v1/tickets/{tid}/transitions", json={"transition": name}, headers={"Patron-Act-As": who})
        assert r.status_code == 200, r.text
    # the old attack: one key naming two people in the body is no longer expressible
    r = svc.post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve", "by": mgr},
                 headers={"Patron-Act-As": sup})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = svc.post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"}, headers={"Patron-Act-As": sup})
    assert r.status_code == 200 and r.json()["state"] == "approval_l2"
    # ... nor through act-as: the same credential may not approve the second level, whoever it names
    r = svc.post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"}, headers={"Patron-Act-As": mgr})
    assert r.status_code == 403 and r.json()["code"] == "approver-not-distinct"
    # a plain service key cannot approve at all, nor act for anyone
    r = http.post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"})
    assert r.status_code == 403 and r.json()["code"] == "staff-required"
    plain = Http(server, make_token(["tickets:write"]))
    r = plain.post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"}, headers={"Patron-Act-As": mgr})
    assert r.status_code == 403 and r.json()["required_scope"] == "act-as"
    # the manager, signed in with their own session, approves
    r = sign_in(server, mgr).post(f"/v1/tickets/{tid}/approvals", json={"decision": "approve"})
    assert r.status_code == 200 and r.json()["state"] == "processing"
    approvals = http.get(f"/v1/tickets/{tid}/approvals").json()["items"]
    assert [(a["level"], a["by"]) for a in approvals] == [(1, sup), (2, mgr)]


def test_body_naming_another_staff_member_is_refused(server, http):
    me = create_staff(http, "cs", ["agent_l2"])
    other = create_staff(http, "cs", ["supervisor"])
    s = sign_in(server, me)
    tid = _refund_ticket(http)
    for path, body in ((f"/v1/tickets/{tid}/transitions", {"transition": "accept", "by": other}),
                       (f"/v1/tickets/{tid}/comments", {"author": other, "body": "冒名"}),
                       (f"/v1/tickets/{tid}/comments", {"author": other, "author_kind": "staff", "body": "冒名"}),
                       (f"/v1/tickets/{tid}/assign", {"assignee": me, "by": other}),
                       (f"/v1/tickets/{tid}/attachments", {"ref": "s3://x", "by": other})):
        r = s.post(path, json=body)
        assert r.status_code == 422 and r.json()["code"] == "validation-failed", (path, r.text)
    r = http.post("/v1/tickets", json={"category": "发票", "title": "x", "user_id": "u", "created_by": other},
                  key=uid("k"))
    assert r.status_code == 422
    # what the session does is recorded as the session's person
    r = s.post(f"/v1/tickets/{tid}/transitions", json={"transition": "accept"})
    assert r.status_code == 200
    r = s.post(f"/v1/tickets/{tid}/comments", json={"body": "核实中"})
    assert r.status_code == 201 and r.json()["author"] == me
    # a staff member cannot post as the user
    user = http.get(f"/v1/tickets/{tid}").json()["user"]["id"]
    r = s.post(f"/v1/tickets/{tid}/comments", json={"author": user, "author_kind": "user", "body": "我是用户"})
    assert r.status_code == 403
    hist = http.get(f"/v1/tickets/{tid}/history").json()["items"]
    assert [h["actor"] for h in hist if h["kind"] in ("transition", "comment")] == [me, me]


def test_act_as_records_both_identities(server, http):
    agent = create_staff(http, "cs", ["agent_l2"])
    token = make_token(["tickets:write", "act-as"], name="workspace")
    key_id = token.split("_")[1]
    svc = Http(server, token)
    tid = _refund_ticket(http)
    rid = uid("req")
    r = svc.post(f"/v1/tickets/{tid}/transitions", json={"transition": "accept"},
                 headers={"Patron-Act-As": agent, "X-Request-Id": rid})
    assert r.status_code == 200, r.text
    (row,) = _audit(http, request_id=rid)
    assert row["actor"] == f"api_key:{key_id} as staff:{agent}"
    assert row["staff_no"] == agent and row["credential"] == f"api_key:{key_id}"
    assert row["action"] == "ticket.transition" and row["subject"] == f"ticket:{tid}"
    assert row["before"]["state"] == "new" and row["after"]["state"] == "investigating" and row["policy_version"]
    hist = [h for h in http.get(f"/v1/tickets/{tid}/history").json()["items"] if h["kind"] == "transition"]
    assert hist[-1]["actor"] == agent and hist[-1]["detail"]["via"] == f"api_key:{key_id} as staff:{agent}"
    # an act-as key for someone without the permission is refused like the person would be
    qa = create_staff(http, "cs", ["qa_inspector"])
    r = svc.post(f"/v1/tickets/{tid}/comments", json={"body": "x"}, headers={"Patron-Act-As": qa})
    assert r.status_code == 403 and r.json()["required_permission"] == "ticket.comment"
    r = svc.post(f"/v1/tickets/{tid}/comments", json={"body": "x"}, headers={"Patron-Act-As": "no-such-person"})
    assert r.status_code == 422 and r.json()["code"] == "unknown-staff"


# --- permissions from the route table --------------------------------------------------------------------

def _permission_routes(app):
    out = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions[rule.endpoint], "operation", None)
        if not op or not op.get("permission"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<int:{arg}>", "1").replace(f"<{arg}>", "x1")
            out.append((method, path, op))
    return out


def test_every_permission_checked_route_refuses_a_role_without_it(server, http, app):
    from app.platform import auth
    routes = _permission_routes(app)
    assert len(routes) >= 10  # tickets, ledger freezes, staff admin, policy apply, audit
    access = auth.access_view()
    roles = sorted(access._roles)
    sessions = {}
    for method, path, op in routes:
        wanted = (op["permission"],) if isinstance(op["permission"], str) else op["permission"]
        without = [r for r in roles if not set(wanted) & access.permissions_for([r])]
        assert without, f"every role holds {wanted}: the 403 cannot be shown"
        role = without[0]
        if role not in sessions:
            dept = "finance" if role.startswith("finance") else "cs"
            sessions[role] = sign_in(server, create_staff(http, dept, [role]))
        r = sessions[role].request(method, path, json={})
        assert r.status_code == 403, (method, path, role, r.text)
        problem = r.json()
        assert problem["code"] == "forbidden" and problem["required_permission"] == (
            wanted[0] if len(wanted) == 1 else list(wanted)), (method, path, problem)
        # and a key that acts for nobody gets staff-required where only a person may act
        if not op["allow_service"]:
            r = http.request(method, path, json={})
            assert r.status_code == 403 and r.json()["code"] == "staff-required", (method, path, r.text)


def test_route_permissions_are_declared_and_granted(app):
    from app.platform import auth
    known = auth.known_permissions()
    access = auth.access_view()
    used = set()
    for _, _, op in _permission_routes(app):
        wanted = (op["permission"],) if isinstance(op["permission"], str) else op["permission"]
        used.update(wanted)
    assert used <= set(known)
    for name in used | {"service.serve", "service.supervise", "compensation.issue"}:
        assert access.roles_with(name), f"no role of policies/access.yaml holds {name}"


def test_access_policy_cross_check_refuses_unknown_permissions_and_roles(app):
    from app import policy
    files = policy.read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    bad = dict(files)
    bad["policies/access.yaml"] = files["policies/access.yaml"].replace(
        "permissions: [qa.score]", "permissions: [qa.score, qa.scor]").replace(
        "  scheduler:\n", "  wizard:\n    permissions: [roster.edit]\n  scheduler:\n")
    _, errors = policy.check(bad)
    messages = [f"{e.file}:{e.line}: {e.message}" for e in errors]
    assert any("unknown permission 'qa.scor'" in m and m.startswith("policies/access.yaml:") for m in messages)
    assert any("unknown role 'wizard'" in m for m in messages)
    no_access = {k: v for k, v in files.items() if k != "policies/access.yaml"}
    _, errors = policy.check(no_access)
    assert any("'access'" in e.message for e in errors)


# --- the audit log --------------------------------------------------------------------------------------

def test_one_audit_row_per_state_change_in_a_scripted_scenario(server, http):
    sup = create_staff(http, "finance", ["supervisor"])
    agent = create_staff(http, "cs", ["agent_l2"])
    s_agent, s_sup = sign_in(server, agent), sign_in(server, sup)
    user = uid("u")
    steps = []

    def call(who, method, path, body=None, key=None, action=None, status=None):
        rid = uid("rid")
        headers = {"X-Request-Id": rid}
        if key:
            headers["Idempotency-Key"] = key
        r = who.request(method, path, json=body, headers=headers)
        assert r.status_code < 300, (path, r.text)
        steps.append((rid, action))
        return r.json()

    tid = call(http, "POST", "/v1/tickets", {"category": "退款争议", "title": "t", "user_id": user,
                                             "amount_fen": 1000}, key=uid("k"), action="ticket.create")["id"]
    call(s_agent, "POST", f"/v1/tickets/{tid}/transitions", {"transition": "accept"}, action="ticket.transition")
    call(s_agent, "POST", f"/v1/tickets/{tid}/comments", {"body": "内部"}, action="ticket.comment")
    call(s_agent, "POST", f"/v1/tickets/{tid}/transitions", {"transition": "submit_for_approval"},
         action="ticket.transition")
    call(s_sup, "POST", f"/v1/tickets/{tid}/approvals", {"decision": "approve"}, action="ticket.approval")
    call(s_agent, "POST", f"/v1/tickets/{tid}/assign", {"queue": "invoices"}, action="ticket.assign")
    call(http, "POST", "/v1/ledger/customers", {"external_ref": user}, action="ledger.create_customer")
    call(http, "POST", "/v1/ledger/recharge", {"customer": user, "amount": 500, "external_ref": uid("p")},
         key=uid("k"), action="ledger.recharge")
    call(http, "POST", "/v1/ledger/block", {"customer": user, "debit": True, "reason": "风控"}, key=uid("k"),
         action="ledger.block")
    staff3 = uid("s3")
    call(http, "POST", "/v1/staff", {"staff_no": staff3, "name": "新人", "department": "cs", "roles": ["agent_l1"]},
         action="staff.create")
    call(http, "PATCH", f"/v1/staff/{staff3}", {"roles": ["agent_l2"]}, action="staff.update")
    call(http, "POST", f"/v1/staff/{staff3}/password", {}, action="staff.password_reset")
    call(s_sup, "POST", "/v1/auth/logout", action="auth.logout")
    for rid, action in steps:
        rows = _audit(http, request_id=rid)
        assert len(rows) == 1, (action, rows)
        assert rows[0]["action"] == action and rows[0]["policy_version"]
    by_action = {r["action"]: r for rid, _ in steps for r in _audit(http, request_id=rid)}
    assert by_action["ticket.approval"]["actor"] == f"staff:{sup}"
    assert by_action["ticket.approval"]["credential"].startswith("session:")
    assert by_action["ticket.assign"]["before"]["queue"] == "refund-disputes"
    assert by_action["ticket.assign"]["after"]["queue"] == "invoices"
    assert by_action["staff.update"]["before"]["roles"] == ["agent_l1"]
    assert by_action["staff.update"]["after"]["roles"] == ["agent_l2"]
    assert by_action["ledger.recharge"]["after"]["operation"] == "recharge"
    # a replayed idempotent request changed nothing: no second row
    key = uid("k")
    body = {"customer": user, "amount": 1, "external_ref": uid("p")}
    rids = []
    for _ in range(2):
        rid = uid("rid")
        rids.append(rid)
        r = http.post("/v1/ledger/recharge", json=body, key=key, headers={"X-Request-Id": rid})
        assert r.status_code == 201
    assert [len(_audit(http, request_id=rid)) for rid in rids] == [1, 0]
    # filters, cursor pagination, CSV with a BOM
    page = http.get("/v1/audit", params={"subject": f"ticket:{tid}", "limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = http.get("/v1/audit", params={"subject": f"ticket:{tid}", "cursor": page["next_cursor"]}).json()
    assert len(page["items"]) + len(rest["items"]) == 6  # create, 3 transitions/approvals, comment, assign
    assert len(_audit(http, action="ticket.*", staff_no=agent)) == 4  # 2 transitions, a comment, assign
    r = http.get("/v1/audit", params={"staff_no": sup, "format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv") and r.content.startswith(b"\xef\xbb\xbf")
    text = r.content.decode("utf-8-sig")
    assert text.splitlines()[0].startswith("id,at,actor,staff_no") and "ticket.approval" in text


def test_a_read_only_session_writes_nothing(server, http, app):
    from app.db import db
    from app.models.core import AuditLog
    agent = create_staff(http, "cs", ["agent_l1"])
    s = sign_in(server, agent)
    tid = _refund_ticket(http)
    user = http.get(f"/v1/tickets/{tid}").json()["user"]["id"]
    with db.connection_context():
        tables = sorted(db.get_tables())

    def counts():
        with db.connection_context():
            return {t: db.execute_sql(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables
                    if t not in ("job_run",)}
    before = counts()
    for path in ("/v1/auth/me", "/v1/tickets?limit=5", f"/v1/tickets/{tid}", f"/v1/tickets/{tid}/history",
                 f"/v1/tickets/{tid}/comments", "/v1/staff", "/v1/departments", "/v1/ticket-workflows",
                 f"/v1/ticket-notices?user_id={user}"):
        assert s.get(path).status_code == 200, path
    # refused writes write nothing either
    assert s.post(f"/v1/tickets/{tid}/assign", json={"queue": "vip"}).status_code == 403
    assert s.get("/v1/audit").status_code == 403
    after = counts()
    assert after == before, {t: (before[t], after[t]) for t in before if before[t] != after[t]}
    with db.connection_context():
        assert sorted(a.action for a in AuditLog.select().where(AuditLog.staff_no == agent)) == [
            "auth.login", "staff.password_set"]  # the sign-in only (and the password the test set)


def test_audit_log_is_append_only(db_conn):
    import peewee
    from app.db import db
    from app.models.core import AuditLog
    row = AuditLog.create(actor="tests", action="tests.append_only")
    for stmt in (AuditLog.update(action="changed").where(AuditLog.id == row.id),
                 AuditLog.delete().where(AuditLog.id == row.id)):
        with pytest.raises((peewee.IntegrityError, peewee.InternalError, peewee.OperationalError)):
            with db.atomic():
                stmt.execute()
    assert AuditLog.get_by_id(row.id).action == "tests.append_only"


def test_audit_rows_never_copy_secrets(http):
    rid = uid("rid")
    # a topic nothing publishes: other tests' messages must not gain a delivery to this receiver
    r = http.post("/v1/webhooks", json={"name": "audit-secret", "url": "https://example.invalid/hook",
                                        "topics": f"audit-test.{uuid.uuid4().hex}"}, headers={"X-Request-Id": rid})
    assert r.status_code == 201 and r.json()["secret"]
    assert http.delete(f"/v1/webhooks/{r.json()['id']}").status_code == 200
    (row,) = _audit(http, request_id=rid)
    assert row["action"] == "tickets.create_webhook" and row["after"]["name"] == "audit-secret"
    assert r.json()["secret"] not in str(row)
