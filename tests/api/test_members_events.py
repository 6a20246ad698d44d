"""Member events over HTTP: idempotency, validation, batch, scopes, caps under concurrency."""
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Http, make_token
from tests.membership_factories import event, order, post, uid


def test_event_is_idempotent_by_event_id(http):
    m = uid()
    body = order(m, 128, channel="app")
    first = post(http, body, 201)
    assert first["replayed"] is False
    assert first["growth"]["delta"] == 128
    assert first["growth"]["entries"][0]["rule"] == "order_paid_per_yuan"
    assert first["policy_version"]
    again = post(http, body, 200)
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}
    view = http.get(f"/v1/members/{m}").json()
    assert view["growth"] == 128  # counted once
    other = dict(body, amount_fen=1)
    r = http.post("/v1/member-events", json=other)
    assert r.status_code == 409 and r.json()["code"] == "event-id-reused"


def test_bad_events_are_clear_problems(http):
    m = uid()
    r = http.post("/v1/member-events", json=event(m, "teleport"))
    assert r.status_code == 422 and r.json()["code"] == "unknown-event-type"
    r = http.post("/v1/member-events", json=event(m, "order_paid"))
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = http.post("/v1/member-events", json=event(m, "sign_in", at="yesterday"))
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/occurred_at"
    r = http.post("/v1/member-events", json={"event_id": "x"})
    assert r.status_code == 422 and len(r.json()["errors"]) >= 2
    # custom type declared in the policy is accepted
    assert post(http, event(m, "live_watch"))["growth"]["delta"] == 3


def test_batch_reports_each_item(http):
    m1, m2 = uid(), uid()
    good = order(m1, 10)
    items = [good, event(m2, "sign_in"), event(m2, "bogus"), good, dict(good, amount_fen=5)]
    r = http.post("/v1/member-events/batch", json={"events": items})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [i["status"] for i in out["items"]] == [201, 201, 422, 200, 409]
    assert out["items"][2]["problem"]["code"] == "unknown-event-type"
    assert out["accepted"] == 3 and out["rejected"] == 2
    # replaying the whole batch changes nothing
    r2 = http.post("/v1/member-events/batch", json={"events": items[:2]}).json()
    assert [i["status"] for i in r2["items"]] == [200, 200]
    assert http.get(f"/v1/members/{m1}").json()["growth"] == 10


def test_scopes(server):
    reader = Http(server, make_token(["members:read"]))
    writer = Http(server, make_token(["members:write"]))
    m = uid()
    assert Http(server).post("/v1/member-events", json=event(m, "sign_in")).status_code == 401
    r = reader.post("/v1/member-events", json=event(m, "sign_in"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert writer.post("/v1/member-events", json=event(m, "sign_in")).status_code == 201
    assert reader.get(f"/v1/members/{m}").status_code == 200  # write implies read
    assert Http(server, make_token(["ledger:read"])).get(f"/v1/members/{m}").status_code == 403


def test_daily_cap_holds_under_16_parallel_posts(http, server, admin_token):
    """16 concurrent shares on one day: growth stops exactly at the cap; every cut is reported."""
    m = uid()
    at = "2026-03-10T10:00:00+08:00"
    bodies = [event(m, "share", at=at) for _ in range(16)]

    def send(b):
        return Http(server, admin_token).post("/v1/member-events", json=b)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, bodies))
    assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
    granted = sum(r.json()["growth"]["delta"] for r in results)
    assert granted == 20  # share_daily cap: 20 per day
    cut = sum(e["cut"] for r in results for e in r.json()["growth"]["entries"])
    assert cut == 16 * 10 - 20
    caps = {c["cap"] for r in results for e in r.json()["growth"]["entries"] for c in e["cuts"]}
    assert caps == {"share_daily"}
    view = http.get(f"/v1/members/{m}").json()
    assert view["growth"] == 20
    # the next day has a fresh window
    assert post(http, event(m, "share", at="2026-03-11T00:00:01+08:00"))["growth"]["delta"] == 10


def test_history_pages_newest_first(http):
    m = uid()
    for day in (1, 2, 3):
        post(http, event(m, "share", at=f"2026-04-0{day}T10:00:00+08:00"))
    whole = http.get(f"/v1/members/{m}/history?limit=10").json()
    # each share earns growth and points: two items per instant, growth first
    assert [(i["at"], i["kind"]) for i in whole["items"]] == [
        (f"2026-04-0{day}T02:00:00Z", kind) for day in (3, 2, 1) for kind in ("growth", "points")]
    assert whole["next_cursor"] is None
    # a page may end inside one instant: the cursor (at, kind, id) goes on from the very next row
    for size in (1, 2, 3, 4):
        seen, cursor = [], None
        for _ in range(10):
            page = http.get(f"/v1/members/{m}/history", params={"limit": size, **({"cursor": cursor} if cursor else {})}).json()
            assert len(page["items"]) <= size
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == whole["items"], size
    # a row written behind the cursor while paging (an older event) is not repeated, nor a newer one
    first = http.get(f"/v1/members/{m}/history?limit=3").json()
    post(http, event(m, "share", at="2026-04-04T10:00:00+08:00"))
    rest = http.get(f"/v1/members/{m}/history", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    assert first["items"] + rest["items"] == whole["items"]
    assert http.get(f"/v1/members/{m}/history?limit=0").status_code == 422
    for bad in ("yesterday", "W10=", "WyJ4IiwxLDJd"):  # not base64 JSON; []; ["x",1,2]
        r = http.get(f"/v1/members/{m}/history", params={"cursor": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/cursor", (bad, r.text)
    assert http.get(f"/v1/members/{uid()}/history").status_code == 404
