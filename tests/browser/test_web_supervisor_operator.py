"""In a real browser: a supervisor approves an above-limit compensation; an operator sees a broken policy set
refused with its errors (file:line:col) and applies a good one after the confirmation."""
import re
import secrets

from playwright.sync_api import expect

from tests.browser.conftest import shot, web_sign_in
from tests.conftest import Http, create_staff, make_token
from tests.service_factories import clean_floor, new_agent, service_policy


def test_supervisor_approves_an_above_limit_compensation(app, server, admin_token, new_page):
    http = Http(server, admin_token)
    agent = new_agent(app, roles=("agent_l1",), prefix="WEBC")
    supervisor = create_staff(http, "cs", ["supervisor"], prefix="WEBS")
    user_id = f"u-web-{secrets.token_hex(4)}"
    backend = Http(server, make_token(["service:write", "act-as"], "web-tests-backend"))
    r = backend.post("/v1/service/compensations", json={"user_id": user_id, "amount_fen": 5000, "reason": "delivery_delay",
                                                     "note": "超时一周"},
                  key=f"web-{secrets.token_hex(6)}", headers={"Patron-Act-As": agent})
    assert r.status_code == 202, r.text  # above agent_l1's 20-yuan limit: waits for approval
    comp_id, ticket_id = r.json()["id"], r.json()["approval_ticket_id"]

    p = new_page()
    web_sign_in(p, server, supervisor, "/web/floor")
    clean_floor(app)
    with service_policy(app):  # the queue without the bot; no agent is online, so the user waits
        general = p.locator('#floor-groups tr[data-group="general"] td.queued')
        expect(general).to_have_text("0")
        shot(p, "floor-empty")
        r = backend.post("/v1/service/conversations", json={"user_id": f"u-floor-{secrets.token_hex(4)}"})
        assert r.status_code == 201 and r.json()["conversation"]["state"] == "queued", r.text
        expect(general).to_have_text("1")  # the floor refreshes itself
        shot(p, "floor-queued")
    clean_floor(app)

    p.goto(f"{server}/web/approvals")
    row = p.locator(f'tr[data-compensation="{comp_id}"]')
    expect(row).to_contain_text("¥50.00")
    expect(row.locator(f'[data-approval-ticket="{ticket_id}"]')).to_be_visible()
    shot(p, "approvals")
    # the compensation's approval is a step on its ticket (the tickets workflow pays it on approval)
    ticket_row = p.locator(f'tr[data-ticket="{ticket_id}"]')
    expect(ticket_row).to_contain_text("¥50.00")
    ticket_row.get_by_label(f"批准工单 #{ticket_id}").click()
    expect(p.locator("#flash [data-code=ticket-approve]")).to_be_visible()
    expect(p.locator(f'tr[data-compensation="{comp_id}"]')).to_have_count(0)
    expect(p.locator(f'tr[data-ticket="{ticket_id}"]')).to_have_count(0)
    assert http.get(f"/v1/service/compensations/{comp_id}").json()["state"] == "paid"
    shot(p, "approvals-done")

    p.goto(f"{server}/web/stats")
    expect(p.locator("#service-stats svg").first).to_be_visible()
    expect(p.locator("#ticket-stats svg")).to_be_visible()
    shot(p, "stats")


def test_operator_sees_a_broken_set_refused_and_applies_a_good_one(app, server, admin_token, new_page):
    from app import policy
    from app.db import db
    http = Http(server, admin_token)
    operator = create_staff(http, "cs", ["admin"], prefix="WEBO")
    with app.app_context(), db.connection_context():
        before = dict(policy.active().files)
    name = next(k for k in before if k.endswith("policies/service.yaml"))
    try:
        p = new_page()
        p.on("dialog", lambda d: d.accept())
        web_sign_in(p, server, operator, "/web/policies")
        expect(p.locator("#active-version")).to_have_text(policy_version(app))
        shot(p, "policies")
        p.goto(f"{server}/web/policies/edit?file={name}")
        text = p.locator("#policy-text").input_value()
        assert "queue_cap: 200" in text

        # broken: a negative cap; the preview lists the error with file:line:col and offers no apply
        p.locator("#policy-text").fill(text.replace("queue_cap: 200", "queue_cap: -5", 1))
        p.locator("#preview-edit").click()
        expect(p.locator("#policy-preview")).to_have_attribute("data-valid", "false")
        where = p.locator(".policy-errors .where").first
        expect(where).to_have_text(re.compile(re.escape(name) + r":\d+:\d+$"))
        expect(p.locator("#apply-confirm")).to_have_count(0)
        shot(p, "policy-refused")

        # good: a bigger cap; the confirmation shows the semantic diff, then it is applied
        p.locator("#policy-text").fill(text.replace("queue_cap: 200", "queue_cap: 240", 1))
        p.locator("#preview-edit").click()
        expect(p.locator("#policy-preview")).to_have_attribute("data-valid", "true")
        expect(p.locator(".policy-diff")).to_contain_text("queue_cap")
        candidate = p.locator("#candidate-version").inner_text()
        shot(p, "policy-preview")
        p.locator("#apply-confirm").click()
        expect(p.locator("#flash [data-code=policy-applied]")).to_contain_text(candidate)
        assert http.get("/v1/policies/active").json()["version"] == candidate
        p.goto(f"{server}/web/policies")
        expect(p.locator("#active-version")).to_have_text(candidate)
        shot(p, "policies-applied")
    finally:
        with app.app_context(), db.connection_context():
            policy.apply(before, "tests")


def policy_version(app):
    from app import policy
    from app.db import db
    with app.app_context(), db.connection_context():
        return policy.active_version()
