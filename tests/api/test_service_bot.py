"""The service bot over HTTP against the real server: it answers from published knowledge before a human,
hands over on 转人工 and after failed (low-confidence) turns, and gives the agent the transcript."""
import secrets

import pytest

from app.platform import clock
from tests.conftest import Http, make_token
from tests.service_factories import clean_floor, new_agent, service_policy


@pytest.fixture(scope="module")
def api(server, app):
    return Http(server, make_token(["service:write", "act-as"], "bot-tests"))


@pytest.fixture(scope="module")
def entry(app, api):
    editor, reviewer = new_agent(app, roles=("knowledge_keeper",), prefix="BE"), new_agent(app, roles=("supervisor",), prefix="BR")
    r = api.post("/v1/knowledge/entries", headers={"Patron-Act-As": editor}, json={
        "title": "注销账户", "category": "账户", "tags": ["注销", "账户"], "questions": ["怎么注销账号"],
        "body": "在【设置-账户与安全-注销账户】申请，注销后不可恢复。"})
    eid = r.json()["id"]
    api.post(f"/v1/knowledge/entries/{eid}/submit", headers={"Patron-Act-As": editor})
    assert api.post(f"/v1/knowledge/entries/{eid}/publish", json={},
                    headers={"Patron-Act-As": reviewer}).status_code == 200
    return eid


@pytest.fixture()
def bot_on(app, entry):
    clean_floor(app)
    with service_policy(app, calendar="always", assignment="pull",
                        **{"bot.enabled": True, "bot.confidence_threshold": 0.3, "bot.max_failed_turns": 2}):
        yield
    clean_floor(app)
    clock.set_now(None)


def start(api):
    user = f"bu-{secrets.token_hex(4)}"
    r = api.post("/v1/service/conversations", json={"user_id": user})
    assert r.status_code == 201, r.text
    conv = r.json()["conversation"]
    assert conv["state"] == "bot"
    return user, conv["id"]


def say(api, user, conv, text):
    r = api.post(f"/v1/service/conversations/{conv}/messages",
                 json={"user_id": user, "message": {"type": "text", "text": text}})
    assert r.status_code == 201, r.text
    return r.json()["replies"]


def test_bot_answers_then_hands_over_on_request_with_the_transcript(api, bot_on, entry):
    user, conv = start(api)
    [reply] = say(api, user, conv, "我想把账号注销掉，咋弄")
    assert reply["sender"] == "bot" and reply["body"]["entry_id"] == entry and "注销账户" in reply["body"]["text"]
    assert reply["body"]["confidence"] >= 0.3
    assert api.get(f"/v1/service/conversations/{conv}").json()["state"] == "bot"  # not in the queue

    replies = say(api, user, conv, "还是帮我转 人工吧！")
    assert [r["kind"] for r in replies] == ["queued"] and replies[0]["body"]["reason"] == "user-asked"
    view = api.get(f"/v1/service/conversations/{conv}").json()
    assert view["state"] == "queued" and view["queue"]["position"] >= 1
    events = api.get(f"/v1/service/conversations/{conv}/transcript").json()["events"]
    [handover] = [e for e in events if e["kind"] == "handover"]
    assert handover["audience"] == "agent" and handover["body"]["reason"] == "user-asked"
    texts = [(line["from"], line["text"]) for line in handover["body"]["transcript"]]
    assert ("user", "我想把账号注销掉，咋弄") in texts and ("bot", reply["body"]["text"]) in texts
    assert api.get(f"/v1/knowledge/entries/{entry}").json()["usage_count"] >= 1

    # the agent who takes the user gets them from the queue like anyone else
    agent = new_agent(api_app(), prefix="BA")
    assert api.post("/v1/service/agent/online", json={}, headers={"Patron-Act-As": agent}).status_code == 200
    r = api.post("/v1/service/agent/take", headers={"Patron-Act-As": agent})
    assert r.status_code == 200 and r.json()["conversation"]["id"] == conv
    api.post("/v1/service/agent/offline", headers={"Patron-Act-As": agent})


def test_bot_hands_over_after_failed_low_confidence_turns(api, bot_on):
    user, conv = start(api)
    [first] = say(api, user, conv, "嗯嗯那个就是上回说的那件事")
    assert first["sender"] == "bot" and first["body"]["failed"] is True and first["body"]["confidence"] < 0.3
    replies = say(api, user, conv, "阿巴阿巴 xyzzy")
    assert [r["kind"] for r in replies] == ["queued"] and replies[0]["body"]["reason"] == "low-confidence"
    assert api.get(f"/v1/service/conversations/{conv}").json()["state"] == "queued"
    decisions = api.get(f"/v1/service/conversations/{conv}/decisions").json()["items"]
    assert any(d["rule"] == "bot.max_failed_turns" for d in decisions)


def test_without_the_bot_the_user_goes_straight_to_the_queue(api, app, entry):
    clean_floor(app)
    with service_policy(app, calendar="always", assignment="pull", **{"bot.enabled": False}):
        r = api.post("/v1/service/conversations", json={"user_id": f"bu-{secrets.token_hex(4)}"})
        assert r.status_code == 201 and r.json()["conversation"]["state"] == "queued"
    clean_floor(app)


_app = {}


@pytest.fixture(autouse=True)
def _remember_app(app):
    _app["app"] = app


def api_app():
    return _app["app"]
