"""Customer service (客服): queue with caps, agent lock, presence and timeouts, live conversations, complaints.

Public interface (the API and jobs code against it):
    desk: request_service, take, dispatch, go_online/go_away/go_offline, heartbeats, transfer, close, csat, expire
    complaints: ticket_from_conversation, log_call, post_review
    live: subscribe/publish (fan-out), events
    monitoring: floor (real-time floor view), evaluate (alerts), list_alerts, acknowledge
    stats: statistics (per day, agent, group, channel), statistics_csv
    quality: QA sampling, rubric scoring, acknowledgement/appeal, score_summary(date_from, date_to)
    workforce: rosters, shifts, attendance, capacity_forecast(date_from, date_to), the escalation picker
"""
from app.services.service import (complaints, desk, live, monitoring, policy, quality, stats,  # noqa: F401
                                  workforce)


# Staff permissions the service desk's routes check (service.serve/supervise and compensation.issue are
# declared by identity and tickets too: declaring a name twice is harmless).
PERMISSIONS = {
    "service.serve": "customer service desk: go online, take users, message, close and transfer own sessions",
    "service.supervise": "customer service desk: see the floor, transfer or close any session",
    "service.floor.view": "customer service monitoring: the real-time floor, statistics and alerts",
    "service.alerts.manage": "customer service monitoring: acknowledge alerts, run the alert evaluation",
    "compensation.approve": "approve a red-packet compensation above the payer's limit",
    "order.invoice": "reissue an invoice for the user (补开发票) through the shop",
    "order.return": "submit a return/exchange for the user (退换货) through the shop",
    "order.cancel": "cancel an order for the user (取消订单) through the shop",
    "qa.score": "score conversations and tickets for quality",
    "qa.appeal": "acknowledge or appeal a quality score of one's own work",
    "qa.manage": "run QA sampling, score any review, resolve appeals",
    "roster.edit": "edit shifts and rosters",
}


def register():
    """The service policy kind, its cross-check, required rulesets, engine actions and the permissions its
    routes check; called by app.contexts."""
    from app.platform import auth
    from app.policy import kinds
    policy.register()
    monitoring.register()
    kinds.register("quality", cross_check=quality.cross_check)
    kinds.register("workforce", cross_check=workforce.cross_check)
    auth.declare_permissions(PERMISSIONS)


def seed_demo():
    """Demo: the cs agents of the tickets demo are the service agents; nothing else is needed (idempotent)."""
    return None
