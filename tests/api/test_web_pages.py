"""The web workspace over plain HTTP: sign-in with the session cookie, CSRF, and every page refusing a role
without the permission (or scope) of the API operation it stands for."""
import re
import secrets

import pytest
import requests

from tests.conftest import STAFF_PASSWORD, create_staff, set_staff_password

# page -> (a role that may open it, a role that may not)
PAGES = {
    "/web/agent": ("agent_l1", "qa_inspector"),
    "/web/approvals": ("supervisor", "agent_l1"),
    "/web/floor": ("supervisor", "agent_l1"),
    "/web/qa": ("qa_inspector", "logistics_specialist"),
    "/web/rosters": ("scheduler", "agent_l1"),
    "/web/stats": ("supervisor", "agent_l2"),
    "/web/stats/tickets.csv": ("supervisor", "agent_l1"),
    "/web/policies": ("admin", "supervisor"),
    "/web/policies/diff?a=active&b=active": ("admin", "agent_l1"),
    "/web/simulations": ("admin", "agent_l1"),
}
# unsafe actions -> (role with the permission, role without)
ACTIONS = {
    "/web/agent/online": ("agent_l1", "qa_inspector"),
    "/web/agent/compensations": ("agent_l1", "logistics_specialist"),
    "/web/agent/actions/cancel": ("agent_l1", "finance_specialist"),
    "/web/approvals/tickets/1": ("supervisor", "agent_l1"),
    "/web/policies/apply": ("admin", "supervisor"),
    "/web/qa/1/score": ("qa_inspector", "agent_l1"),
    "/web/rosters": ("scheduler", "agent_l1"),
}


def web_session(server, staff_no):
    """A requests.Session signed in through the sign-in form (cookie session + its CSRF token)."""
    set_staff_password(staff_no)
    s = requests.Session()
    page = s.get(f"{server}/web/login", timeout=30)
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(f"{server}/web/login", data={"staff_no": staff_no, "password": STAFF_PASSWORD, "login_csrf": token,
                                            "next": "/web/"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return s


@pytest.fixture(scope="module")
def staff(server, admin_token):
    from tests.conftest import Http
    http = Http(server, admin_token)
    roles = {r for pair in list(PAGES.values()) + list(ACTIONS.values()) for r in pair}
    return {role: create_staff(http, "cs", [role], prefix="W") for role in roles}


def test_pages_need_a_session(server):
    r = requests.get(f"{server}/web/agent", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].endswith("/web/login?next=/web/agent")
    r = requests.post(f"{server}/web/agent/online", allow_redirects=False, timeout=30)
    assert r.status_code == 401


def test_wrong_password_and_stale_login_form_are_refused(server, staff):
    s = requests.Session()
    token = re.search(r'name="login_csrf" value="([^"]+)"', s.get(f"{server}/web/login", timeout=30).text).group(1)
    set_staff_password(staff["agent_l1"])
    r = s.post(f"{server}/web/login", data={"staff_no": staff["agent_l1"], "password": "wrong-Password-1",
                                            "login_csrf": token}, allow_redirects=False, timeout=30)
    assert r.status_code == 401 and "工号或密码不正确" in r.text
    r = requests.post(f"{server}/web/login", data={"staff_no": staff["agent_l1"], "password": STAFF_PASSWORD,
                                                   "login_csrf": "forged"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403


@pytest.mark.parametrize("path", sorted(PAGES))
def test_each_page_refuses_a_role_without_its_permission(server, staff, path):
    allowed, refused = PAGES[path]
    ok = web_session(server, staff[allowed]).get(server + path, timeout=30)
    assert ok.status_code == 200, ok.text[:500]
    assert ok.headers["Content-Type"].startswith("text/csv" if path.endswith(".csv") else "text/html")
    no = web_session(server, staff[refused]).get(server + path, timeout=30)
    assert no.status_code == 403, no.text[:500]
    assert 'data-code="forbidden"' in no.text and "没有权限" in no.text


@pytest.mark.parametrize("path", sorted(ACTIONS))
def test_each_action_refuses_a_role_without_its_permission(server, staff, path):
    _, refused = ACTIONS[path]
    s = web_session(server, staff[refused])
    r = s.post(server + path, data={"csrf_token": s.cookies["patron_csrf"]}, headers={"HX-Request": "true"},
               timeout=30)
    assert r.status_code == 403, r.text[:500]
    assert r.headers["HX-Retarget"] == "#flash" and 'data-code="forbidden"' in r.text


def test_unsafe_requests_need_the_csrf_token(server, staff):
    s = web_session(server, staff["agent_l1"])
    r = s.post(f"{server}/web/agent/heartbeat", timeout=30)
    assert r.status_code == 403 and 'data-code="csrf-failed"' in r.text
    # with the token (header from htmx, or the form field) the request reaches the desk, which refuses a heartbeat
    # of an agent who is not online: the CSRF check passed
    r = s.post(f"{server}/web/agent/heartbeat", headers={"X-CSRF-Token": s.cookies["patron_csrf"]}, timeout=30)
    assert r.status_code == 409 and "csrf-failed" not in r.text, r.text[:300]
    r = s.post(f"{server}/web/agent/heartbeat", data={"csrf_token": s.cookies["patron_csrf"]}, timeout=30)
    assert r.status_code == 409 and "csrf-failed" not in r.text, r.text[:300]


def test_sign_out_ends_the_session(server, staff):
    s = web_session(server, staff["agent_l1"])
    old = s.cookies["patron_session"]
    r = s.post(f"{server}/web/logout", data={"csrf_token": s.cookies["patron_csrf"]}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 303
    r = requests.get(f"{server}/web/agent", cookies={"patron_session": old}, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/web/login" in r.headers["Location"]


def test_customer_chat_needs_its_token(server):
    r = requests.get(f"{server}/web/chat/1", timeout=30)
    assert r.status_code in (401, 404)
    r = requests.post(f"{server}/web/chat", data={"user_id": f"u-{secrets.token_hex(3)}"}, timeout=30)
    assert r.status_code == 403  # the demo start is off unless CHAT_DEMO_START


def test_every_guarded_web_route_refuses_a_role_without_it(app, server, staff):
    """Every route of the web workspace declared with a permission or a scope, taken by a QA inspector (who
    holds qa.score and the default scopes only): each one the inspector lacks answers 403."""
    from app.platform import auth
    from app.db import db
    with app.app_context(), db.connection_context():
        access = auth.access_view()
        perms, scopes = access.permissions_for(["qa_inspector"]), access.scopes_for(["qa_inspector"])
    principal = {"permissions": perms, "scopes": scopes}
    s = web_session(server, staff["qa_inspector"])
    checked = 0
    for rule in app.url_map.iter_rules():
        guard = getattr(app.view_functions[rule.endpoint], "web_page", None)
        if not guard or not (guard["permission"] or guard["scope"]):
            continue
        held = (auth.has_permission(principal, guard["permission"]) if guard["permission"]
                else auth.has_scope(principal, guard["scope"]))
        if held:
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<int:{arg}>", "1").replace(f"<{arg}>", "x1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            r = s.request(method, server + path, data={"csrf_token": s.cookies["patron_csrf"]}, timeout=30)
            assert r.status_code == 403 and 'data-code="forbidden"' in r.text, (method, path, r.status_code)
            checked += 1
    assert checked >= 25, checked


def test_statistics_page_has_svg_charts_and_csv_exports(server, staff):
    s = web_session(server, staff["supervisor"])
    page = s.get(f"{server}/web/stats", timeout=30)
    assert page.status_code == 200 and page.text.count("<svg") == 3
    r = s.get(f"{server}/web/stats/tickets.csv", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")  # the UTF-8 BOM: Excel on Chinese Windows reads it
    assert r.text.lstrip("\ufeff").splitlines()[0] == "section,dimension,key,metric,value"
    r = s.get(f"{server}/web/stats/service.csv?from=2026-01-01&to=2026-01-02", timeout=30)
    assert r.status_code == 200 and r.text.lstrip("\ufeff").startswith("day,agent,group,channel,")
    r = s.get(f"{server}/web/stats?from=2026-02-30", timeout=30)
    assert r.status_code == 422 and "/query/from" in r.text
