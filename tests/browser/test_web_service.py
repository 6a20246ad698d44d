"""In a real browser: an agent serves a user of the customer chat page, live, from sign-in to CSAT."""
import re
import secrets

from playwright.sync_api import expect

from tests.browser.conftest import shot, web_sign_in
from tests.conftest import Http, make_token
from tests.service_factories import clean_floor, new_agent, service_policy


def _start_chat(page, server, user_id, topic):
    page.goto(f"{server}/web/chat")
    page.get_by_label("用户编号").fill(user_id)
    page.get_by_label("想咨询什么？").fill(topic)
    page.get_by_role("button", name="开始咨询").click()
    expect(page).to_have_url(re.compile(r"/web/chat/\d+$"))


def _publish(app, server, title, body):
    """A published knowledge entry (written by a knowledge keeper, published by a supervisor)."""
    api = Http(server, make_token(["service:write", "act-as"], "web-knowledge"))
    editor, reviewer = new_agent(app, roles=("knowledge_keeper",), prefix="WK"), new_agent(app, roles=("supervisor",))
    r = api.post("/v1/knowledge/entries", json={"title": title, "body": body, "category": "发货"},
                 headers={"Patron-Act-As": editor})
    assert r.status_code == 201, r.text
    entry = r.json()["id"]
    assert api.post(f"/v1/knowledge/entries/{entry}/submit", headers={"Patron-Act-As": editor}).status_code == 200
    r = api.post(f"/v1/knowledge/entries/{entry}/publish", json={}, headers={"Patron-Act-As": reviewer})
    assert r.status_code == 200, r.text
    return entry


def test_agent_serves_a_user_end_to_end(app, server, new_page, chat_demo):
    clean_floor(app)
    agent = new_agent(app, roles=("agent_l1",), prefix="WEB")
    user_id = f"u-web-{secrets.token_hex(4)}"
    script = f"非常抱歉让您久等，您的订单将在 48 小时内发出（{secrets.token_hex(3)}）"
    entry = _publish(app, server, "发货延迟安抚话术", script)
    with service_policy(app):  # the queue without the bot
        a = new_page()
        web_sign_in(a, server, agent, "/web/agent")
        expect(a.locator("#agent-status")).to_have_attribute("data-status", "offline")
        shot(a, "agent-offline")

        u = new_page(width=420, height=800)  # the small embedded window
        _start_chat(u, server, user_id, "订单还没发货")
        expect(u.locator("#queue-state")).to_have_text("排队中")
        expect(u.locator("#queue-position")).to_be_visible()
        expect(u.locator(".timeout-note")).to_contain_text("没有任何操作")
        shot(u, "chat-queued")

        # the agent goes online and is given the waiting user (the lock closes)
        a.get_by_role("button", name="上线").click()
        expect(a.locator("#agent-status")).to_have_attribute("data-status", "online")
        expect(a.locator("#messages")).to_have_attribute("data-user", user_id)
        expect(a.locator("#agent-lock")).to_have_attribute("data-lock", "closed")
        expect(u.locator("#queue-state")).to_have_text("客服接待中")

        # messages both ways, live
        u.get_by_placeholder("请输入消息").fill("你好，我的订单还没发货")
        u.get_by_role("button", name="发送").click()
        expect(a.locator("#messages li.from-user").last).to_contain_text("我的订单还没发货")
        a.get_by_label(re.compile("^回复")).fill("您好，我来帮您查一下")
        a.get_by_role("button", name="发送").click()
        expect(u.locator("#messages li.from-agent").last).to_contain_text("我来帮您查一下")

        # knowledge: search (Alt+K), one-click insert into the reply, send
        a.keyboard.press("Alt+K")
        expect(a.get_by_label(re.compile("^搜索话术"))).to_be_focused()
        a.keyboard.type("发货延迟安抚话术")
        a.keyboard.press("Enter")
        a.locator(f'#knowledge-result button.insert[data-entry="{entry}"]').click()
        expect(a.get_by_label(re.compile("^回复"))).to_have_value(script)
        a.get_by_role("button", name="发送").click()
        expect(u.locator("#messages li.from-agent").last).to_contain_text(script)
        shot(u, "chat-serving")

        # the customer view and an order looked up
        expect(a.locator("#customer-view")).to_have_attribute("data-user", user_id)
        a.locator("#customer-view a").first.click()
        expect(a.locator("#order")).to_be_visible()
        expect(a.locator("#order")).to_contain_text(user_id)
        shot(a, "agent-serving")

        # compensation within the agent's limit is paid at once
        expect(a.locator("#compensation-limits")).to_contain_text("单笔限额")
        a.get_by_label("金额（元）").fill("5")
        a.locator("#comp-submit").click()
        expect(a.locator("#flash [data-code=compensation-paid]")).to_be_visible()

        # a ticket from the conversation
        a.locator("#ticket-box summary").click()
        a.get_by_label("问题描述").fill("物流超时，需物流部跟进")
        a.locator("#ticket-submit").click()
        expect(a.locator("#flash [data-code=ticket]")).to_contain_text("工单 #")
        expect(u.locator("#messages")).to_contain_text("已为您创建工单")

        conv_id = int(a.locator("#messages").get_attribute("data-conv"))
        # close with category and summary: the lock opens, the user is asked for CSAT
        a.locator("#close-box summary").click()
        a.get_by_label("分类").select_option("物流")
        a.get_by_label("小结").fill("已补偿并转物流部")
        a.locator("#close-submit").click()
        expect(a.locator("#agent-lock")).to_have_attribute("data-lock", "open")
        expect(a.locator("#no-conversation")).to_be_visible()
        expect(u.get_by_role("group", name="满意度评分")).to_be_visible()
        shot(u, "chat-csat")
        u.get_by_role("button", name="5 分").click()
        expect(u.locator("#csat-thanks")).to_be_visible()
        shot(u, "chat-rated")
        shot(a, "agent-idle")

        a.keyboard.press("Alt+3")  # the shortcut for 下线
        expect(a.locator("#agent-status")).to_have_attribute("data-status", "offline")

    # a QA inspector scores the conversation with the rubric
    inspector = new_agent(app, roles=("qa_inspector",), prefix="WQA")
    api = Http(server, make_token(["service:write", "act-as"], "web-qa"))
    r = api.post("/v1/service/qa/reviews", json={"subject": "conversation", "id": conv_id},
                 headers={"Patron-Act-As": inspector})
    assert r.status_code == 201, r.text
    review = r.json()["id"]
    q = new_page()
    web_sign_in(q, server, inspector, "/web/qa")
    q.locator(f'#qa-reviews tr[data-review="{review}"] a').click()
    expect(q.locator("ul.messages")).to_contain_text("我的订单还没发货")  # the transcript beside the rubric
    for field, points in (("礼貌问候与结束语", "10"), ("准确理解问题", "18"), ("解答准确完整", "35"),
                          ("处理及时高效", "15"), ("服务态度", "15")):
        q.get_by_label(re.compile("^" + field)).fill(points)
    q.get_by_label("评语").fill("处理及时，补偿得当")
    shot(q, "qa-review")
    q.get_by_role("button", name="提交评分").click()
    expect(q.locator("#flash [data-code=qa-scored]")).to_contain_text("93 分")
