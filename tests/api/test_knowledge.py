"""Knowledge end to end over HTTP against the real server: versions and review, restore, Chinese search ranking,
suggestions from a conversation, usage counts."""
import secrets

import pytest

from tests.conftest import Http, make_token
from tests.service_factories import new_agent


@pytest.fixture(scope="module")
def api(server, app):
    return Http(server, make_token(["service:write", "act-as"], "knowledge-tests"))


@pytest.fixture(scope="module")
def people(app):
    return {"editor": new_agent(app, roles=("knowledge_keeper",), prefix="KE"),
            "reviewer": new_agent(app, roles=("supervisor",), prefix="KR"),
            "agent": new_agent(app, prefix="KA")}


def as_(staff_no):
    return {"Patron-Act-As": staff_no}


def publish_new(api, people, **body):
    r = api.post("/v1/knowledge/entries", json=body, headers=as_(people["editor"]))
    assert r.status_code == 201, r.text
    entry_id = r.json()["id"]
    r = api.post(f"/v1/knowledge/entries/{entry_id}/submit", headers=as_(people["editor"]))
    assert r.status_code == 200, r.text
    r = api.post(f"/v1/knowledge/entries/{entry_id}/publish", json={}, headers=as_(people["reviewer"]))
    assert r.status_code == 200, r.text
    return entry_id


def search(api, q, category, limit=10):
    r = api.get("/v1/knowledge/search", params={"q": q, "category": category, "limit": limit})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_versions_review_before_publish_and_restore(api, people):
    cat = f"测试{secrets.token_hex(3)}"
    ed, rv = as_(people["editor"]), as_(people["reviewer"])
    r = api.post("/v1/knowledge/entries", headers=ed, json={
        "title": "退货运费谁承担", "category": cat, "tags": ["退货", "运费"], "questions": ["退货邮费谁出"],
        "body": "质量问题退货运费由商家承担。"})
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    assert r.json()["state"] == "draft" and r.json()["published_version"] is None
    listed = api.get("/v1/knowledge/entries", params={"category": cat}).json()
    assert [(e["id"], e["state"]) for e in listed["items"]] == [(eid, "draft")] and listed["next_cursor"] is None
    r = api.post("/v1/knowledge/entries", headers=ed, json={"title": "第二条", "category": cat, "body": "另一条。"})
    first = api.get("/v1/knowledge/entries", params={"category": cat, "limit": 1}).json()
    assert [e["id"] for e in first["items"]] == [eid] and first["next_cursor"] == eid  # oldest first
    rest = api.get("/v1/knowledge/entries", params={"category": cat, "cursor": eid}).json()
    assert [e["id"] for e in rest["items"]] == [r.json()["id"]] and rest["next_cursor"] is None
    assert search(api, "退货运费", cat) == []  # a draft is not served

    # the author cannot publish their own version; publishing needs the version to be in review
    assert api.post(f"/v1/knowledge/entries/{eid}/publish", json={}, headers=rv).json()["code"] == "not-in-review"
    assert api.post(f"/v1/knowledge/entries/{eid}/submit", headers=ed).status_code == 200
    r = api.post(f"/v1/knowledge/entries/{eid}/publish", json={}, headers=ed)
    assert r.status_code == 403 and r.json()["code"] == "own-version"
    r = api.post(f"/v1/knowledge/entries/{eid}/publish", json={"version": 1, "note": "ok"}, headers=rv)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "published" and r.json()["published_version"] == 1
    [hit] = search(api, "退货的运费谁出", cat)
    assert hit["id"] == eid and hit["version"] == 1 and "商家承担" in hit["body"]

    # a new version is a draft: search keeps serving version 1 until it is reviewed
    r = api.put(f"/v1/knowledge/entries/{eid}", headers=ed,
                json={"body": "质量问题退货运费由商家承担，先垫付后补偿到红包账户。", "note": "补偿方式"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["published_version"] == 1
    assert r.json()["latest"]["title"] == "退货运费谁承担"  # carried over
    assert "红包" not in search(api, "退货运费", cat)[0]["body"]
    api.post(f"/v1/knowledge/entries/{eid}/submit", headers=ed)
    r = api.post(f"/v1/knowledge/entries/{eid}/reject", json={"note": "写清楚时限"}, headers=rv)
    assert r.json()["state"] == "rejected" and r.json()["published_version"] == 1
    api.post(f"/v1/knowledge/entries/{eid}/submit", headers=ed)
    r = api.post(f"/v1/knowledge/entries/{eid}/publish", json={"version": 1}, headers=rv)
    assert r.status_code == 409 and r.json()["code"] == "version-moved"
    assert api.post(f"/v1/knowledge/entries/{eid}/publish", json={"version": 2}, headers=rv).status_code == 200
    assert "红包" in search(api, "退货运费", cat)[0]["body"]

    # history: who wrote and who reviewed what, when; restore version 1 as a new reviewed version
    items = api.get(f"/v1/knowledge/entries/{eid}/versions").json()["items"]
    assert [(v["version"], v["state"], v["author"], v["reviewed_by"]) for v in items] == [
        (1, "superseded", people["editor"], people["reviewer"]),
        (2, "published", people["editor"], people["reviewer"])]
    assert all(v["created_at"] and v["reviewed_at"] for v in items)
    r = api.get(f"/v1/knowledge/entries/{eid}/versions/1")
    assert r.status_code == 200 and r.json() == items[0]
    assert api.get(f"/v1/knowledge/entries/{eid}/versions/9").status_code == 404
    r = api.post(f"/v1/knowledge/entries/{eid}/versions/1/restore", json={}, headers=ed)
    assert r.status_code == 200 and r.json()["version"] == 3
    assert r.json()["latest"]["restored_from"] == 1 and r.json()["latest"]["body"] == "质量问题退货运费由商家承担。"
    api.post(f"/v1/knowledge/entries/{eid}/submit", headers=ed)
    api.post(f"/v1/knowledge/entries/{eid}/publish", json={"version": 3}, headers=rv)
    assert search(api, "退货运费", cat)[0]["body"] == "质量问题退货运费由商家承担。"

    # a person is needed to write; a bad body is a 422 with pointers
    assert api.post("/v1/knowledge/entries", json={"title": "x", "body": "y", "category": cat}).status_code == 403
    r = api.post("/v1/knowledge/entries", json={"title": "x\u0000", "category": cat}, headers=ed)
    assert r.status_code == 422 and {e["pointer"] for e in r.json()["errors"]} == {"", "/title"}  # body missing, NUL


def test_chinese_search_ranks_the_right_entry_first(api, people):
    cat = f"测试{secrets.token_hex(3)}"
    ids = {
        "refund": publish_new(api, people, title="退款进度查询", category=cat, tags=["退款"],
                              questions=["退款什么时候到账"], body="退款审核通过后原路退回，银行卡 3-7 个工作日到账。"),
        "invoice": publish_new(api, people, title="发票抬头填错了怎么修改", category=cat, tags=["发票"],
                               questions=["税号填错了"], body="电子发票可申请换开一次，填写正确的抬头和税号。"),
        "logistics": publish_new(api, people, title="物流很久没更新", category=cat, tags=["物流"],
                                 questions=["快递不动了"], body="物流 48 小时未更新我们会联系快递核实，可申请催件。"),
        "points": publish_new(api, people, title="积分有效期", category=cat, tags=["积分"],
                              questions=["积分会过期吗"], body="积分自获得之日起 12 个月内有效。"),
    }
    cases = [("我的退款咋还没到账", "refund"), ("发票抬头写错了能改吗", "invoice"), ("快递好几天都没动了", "logistics"),
             ("积份会不会过期啊", "points"),  # typo 积份
             ("银行卡退款要几天", "refund")]
    for q, want in cases:
        hits = search(api, q, cat)
        assert hits and hits[0]["id"] == ids[want], (q, hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert search(api, "今天天气怎么样", cat) == []
    r = api.get("/v1/knowledge/search", params={"q": ""})
    assert r.status_code == 422


def test_suggestions_from_the_last_user_message_and_usage_counts(api, people, app):
    cat = f"测试{secrets.token_hex(3)}"
    eid = publish_new(api, people, title="修改收货地址", category=cat, tags=["地址"], questions=["地址填错了"],
                      body="订单未发货前可在订单详情点【修改地址】。")
    user = f"ku-{secrets.token_hex(4)}"
    r = api.post("/v1/service/conversations", json={"user_id": user})
    assert r.status_code == 201, r.text
    conv = r.json()["conversation"]["id"] if "conversation" in r.json() else r.json()["id"]
    for text in ("你好", "我的收货地址填错了，还能改吗"):
        r = api.post(f"/v1/service/conversations/{conv}/messages",
                     json={"user_id": user, "message": {"type": "text", "text": text}})
        assert r.status_code == 201, r.text
    agent = as_(people["agent"])
    r = api.get("/v1/knowledge/suggestions", params={"conversation_id": conv}, headers=agent)
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "我的收货地址填错了，还能改吗"
    assert eid in [h["id"] for h in r.json()["items"]]
    before = api.get(f"/v1/knowledge/entries/{eid}").json()["usage_count"]  # the bot may have answered with it
    for _ in range(2):
        r = api.post(f"/v1/knowledge/entries/{eid}/use", json={"conversation_id": conv}, headers=agent)
        assert r.status_code == 200, r.text
    assert api.get(f"/v1/knowledge/entries/{eid}").json()["usage_count"] == before + 2
    assert api.get("/v1/knowledge/suggestions", params={"conversation_id": conv}).status_code == 403
    api.post(f"/v1/service/conversations/{conv}/leave", json={"user_id": user})
