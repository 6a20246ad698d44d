"""The bot's confidence: a calibrated probability over two ranking features, turned into answer / hand-over by
the policy's threshold (the figures live in bench/bot; these pin the shape, not the numbers)."""
import math

import yaml

from app.services.service import bot


def policy_threshold():
    with open("policies/service.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)["bot"]["confidence_threshold"]


def conf(matched, known):
    return bot.confidence_of(bot.features([{"matched": matched}] if matched is not None else [], known))


def test_confidence_rises_with_the_matched_words_and_the_known_wording():
    for known in (0.0, 0.3, 1.0):
        values = [conf(m, known) for m in range(0, 8)]
        assert values == sorted(values) and len(set(values)) == len(values)
    for m in (0, 2, 5):
        assert conf(m, 0.0) < conf(m, 0.5) < conf(m, 1.0)
    assert all(0.0 < conf(m, k) < 1.0 for m in (0, 9) for k in (0.0, 1.0))


def test_the_policy_threshold_separates_nothing_matched_from_a_plain_match():
    th = policy_threshold()
    assert 0 < th < 1
    assert conf(None, 0.0) < th and conf(0, 0.2) < th  # no hit, nothing known: hand over
    assert conf(3, 0.6) >= th  # three words/bigrams of the question in one entry, wording known: answer
    assert bot.features([{"matched": 3}], 0.6)["log_matched"] == round(math.log1p(3), 4)


def test_decide_hands_over_below_the_threshold_and_answers_above(monkeypatch):
    from app.services.knowledge import entries
    monkeypatch.setattr(entries, "search", lambda text, limit=3: [
        {"id": 1, "title": "t", "score": 5.0, "coverage": 0.5, "matched": 3, "body": "b"}])
    monkeypatch.setattr(entries, "known_share", lambda text: 0.6)
    settings = dict(bot.DEFAULTS, confidence_threshold=policy_threshold(), max_failed_turns=1)
    d = bot.decide("发票怎么开", settings, 0)
    assert d["action"] == "answer" and d["features"] == {"log_matched": round(math.log1p(3), 4), "known_share": 0.6}
    d = bot.decide("发票怎么开", dict(settings, confidence_threshold=0.99), 0)
    assert d["action"] == "handover" and d["reason"] == "low-confidence"
    assert bot.decide("帮我转人工", settings, 0)["reason"] == "user-asked"
