"""The service bot: answers from the published knowledge before a human, hands over with the transcript.

A conversation starts with the bot when the service policy's ``bot.enabled`` is true and some knowledge is
published ("bot first when the bot exists, else the queue"). Each user message is one turn: a hand-over
phrase (转人工 and variants, from policy) hands over at once; an answer whose confidence is below the
policy's threshold is a failed turn, and ``max_failed_turns`` failed turns hand over. Handing over puts
the conversation in its group's queue and gives the agent the transcript and the reason.
"""
import json
import math
import re

_PUNCT = re.compile(r"[\s，。！？、,.!?~～…:：;；\"'“”‘’()（）【】\[\]]+")

# How sure the bot is that the published knowledge answers a question: a logistic model over two ranking
# features, fitted on the tune half of bench/bot/faq.jsonl (its even lines; `bench/bot/bench.py --fit` refits
# and prints these) and reported on the other half. The threshold that turns it into answer / hand-over is
# policy (bot.confidence_threshold).
CALIBRATION = {"bias": -3.17, "log_matched": 2.83, "known_share": 1.63}

DEFAULTS = {"enabled": False, "name": "智能助手", "confidence_threshold": 0.25, "max_failed_turns": 2,
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
    feats = features(hits, entries.known_share(text) if text else 0.0)
    confidence = confidence_of(feats)
    brief = [{"id": h["id"], "title": h["title"], "score": h["score"], "coverage": h["coverage"],
              "matched": h["matched"]} for h in hits]
    out = {"confidence": confidence, "features": feats, "hits": brief}
    if hits and confidence >= float(bot["confidence_threshold"]):
        return dict(out, action="answer", reason="confident", entry=hits[0])
    if failed_before + 1 >= int(bot["max_failed_turns"]):
        return dict(out, action="handover", reason="low-confidence")
    return dict(out, action="clarify", reason="low-confidence")


def features(hits, known_share):
    """The ranking features the confidence reads, both independent of the size of the knowledge: how much
    of the question the best entry matches (log of 1 + its matched words and bigrams) and how much of the
    question's wording the knowledge knows at all (share of its bigrams found anywhere)."""
    return {"log_matched": round(math.log1p(hits[0]["matched"]), 4) if hits else 0.0,
            "known_share": round(known_share, 4)}


def confidence_of(feats, weights=None):
    """P(the knowledge answers this question) from ``features`` under ``CALIBRATION`` (0..1)."""
    w = weights or CALIBRATION
    z = w["bias"] + sum(w[name] * value for name, value in feats.items())
    return round(1.0 / (1.0 + math.exp(-z)), 4)


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
