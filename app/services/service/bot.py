"""The service bot: answers from the published knowledge before a human, hands over with the transcript.

A conversation starts with the bot when the service policy's ``bot.enabled`` is true and some knowledge is
published ("bot first when the bot exists, else the queue"). Each user message is one turn: a hand-over
phrase (转人工 and variants, from policy) hands over at once; an answer whose confidence is below the
policy's threshold is a failed turn, and ``max_failed_turns`` failed turns hand over. Handing over puts
the conversation in its group's queue and gives the agent the transcript and the reason.
"""
import json
import re

_PUNCT = re.compile(r"[\s，。！？、,.!?~～…:：;；\"'“”‘’()（）【】\[\]]+")

DEFAULTS = {"enabled": False, "name": "智能助手", "confidence_threshold": 0.3, "max_failed_turns": 2,
            "handover_phrases": ["转人工", "人工客服", "人工服务", "找人工", "要人工", "真人客服", "人工"],
            "greeting": "您好，我是智能助手，请描述您的问题；需要人工服务请回复“转人工”。",
            "fallback": "抱歉，我没有理解您的问题，可以换个说法描述一下吗？需要人工服务请回复“转人工”。"}


def settings(cfg):
    """The bot section of the service policy with its defaults."""
    return dict(DEFAULTS, **(cfg.doc.get("bot") or {}))


def exists(cfg):
    """The bot runs: enabled in policy and some knowledge published to answer from."""
    if not settings(cfg)["enabled"]:
        return False
    from app.models.knowledge import KnowledgeEntry
    return KnowledgeEntry.select().where(KnowledgeEntry.published_version.is_null(False)).exists()


def wants_human(text, phrases):
    """The user asks for a person: any hand-over phrase in the message (punctuation and spaces ignored)."""
    flat = _PUNCT.sub("", (text or "").lower())
    return any(_PUNCT.sub("", p.lower()) in flat for p in phrases)


def decide(text, bot, failed_before):
    """One turn, without side effects: what the bot does with a user's message.

    Returns:
        dict with ``action`` (answer | clarify | handover), ``reason``, ``confidence`` and the ``hits``
        (entry id, title, score, coverage) the decision saw.
    """
    from app.services.knowledge import entries
    if wants_human(text, bot["handover_phrases"]):
        return {"action": "handover", "reason": "user-asked", "confidence": None, "hits": []}
    hits = entries.search(text, limit=3) if text else []
    confidence = confidence_of(hits)
    brief = [{"id": h["id"], "title": h["title"], "score": h["score"], "coverage": h["coverage"]} for h in hits]
    if hits and confidence >= float(bot["confidence_threshold"]):
        return {"action": "answer", "reason": "confident", "confidence": confidence, "hits": brief,
                "entry": hits[0]}
    if failed_before + 1 >= int(bot["max_failed_turns"]):
        return {"action": "handover", "reason": "low-confidence", "confidence": confidence, "hits": brief}
    return {"action": "clarify", "reason": "low-confidence", "confidence": confidence, "hits": brief}


def confidence_of(hits):
    """How sure the bot is of the top hit (0..1): the share of the question it covers, less when the
    second hit is nearly as good (an ambiguous question)."""
    if not hits:
        return 0.0
    top = hits[0]
    margin = 1.0
    if len(hits) > 1 and top["score"] > 0:
        margin = min(1.0, 0.5 + (top["score"] - hits[1]["score"]) / top["score"])
    return round(top["coverage"] * margin, 4)


def failed_turns(conv_id):
    from app.models.service import ServiceEvent
    rows = ServiceEvent.select(ServiceEvent.body).where((ServiceEvent.conversation == conv_id)
                                                        & (ServiceEvent.sender == "bot"))
    return sum(1 for r in rows if json.loads(r.body).get("failed"))


def transcript_lines(conv_id):
    """The conversation so far as short lines for the agent taking over."""
    from app.models.service import ServiceEvent
    lines = []
    for ev in ServiceEvent.select().where(ServiceEvent.conversation == conv_id).order_by(ServiceEvent.seq):
        body = json.loads(ev.body)
        if ev.kind == "message" and ev.sender in ("user", "bot"):
            lines.append({"seq": ev.seq, "from": ev.sender, "text": body.get("text") or body.get("order_no") or
                          body.get("image_ref") or ""})
    return lines
