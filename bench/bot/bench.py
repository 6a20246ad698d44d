"""Bot benchmark: the labelled Chinese FAQ set (bench/bot/faq.jsonl) against the demo knowledge, through the
product's own search and bot decision (a throwaway SQLite database seeded with the demo knowledge).

Prints top-1 / top-3 retrieval accuracy, how often the bot answers with the right entry, and hand-over
precision/recall (a question labelled ``handover`` is an explicit request for a person or out of scope).

    .venv/bin/python bench/bot/bench.py [--threshold 0.3] [--verbose]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import database, in_process_app  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", type=float, default=None, help="confidence threshold (default: the policy's)")
    ap.add_argument("--verbose", action="store_true", help="print every miss")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(Path(__file__).with_name("faq.jsonl"), encoding="utf-8") if line.strip()]
    url, cleanup = database("sqlite")
    try:
        from app.services.knowledge import demo
        app, _ = in_process_app(url, setup=demo.seed)
        from app.db import db
        from app.models.knowledge import KnowledgeEntry
        from app.services.service import bot
        from app.services.service.policy import current
        with app.app_context(), db.connection_context():
            ids = {e.id: e.title for e in KnowledgeEntry.select()}
            key_of = {title: key for key, _c, title, *_ in demo.ENTRIES}
            settings = bot.settings(current())
            if args.threshold is not None:
                settings["confidence_threshold"] = args.threshold
            # one failed turn hands over: each question is judged on its own
            settings["max_failed_turns"] = 1
            top1 = top3 = answered_right = answered_wrong = 0
            ho_true = ho_false = ho_missed = 0
            answerable = [r for r in rows if r["expect"] != "handover"]
            started = time.perf_counter()
            for r in rows:
                d = bot.decide(r["q"], settings, 0)
                keys = [key_of[ids[h["id"]]] for h in d["hits"]]
                if r["expect"] == "handover":
                    if d["action"] == "handover":
                        ho_true += 1
                    else:
                        ho_missed += 1
                        if args.verbose:
                            print(f"  not handed over: {r['q']} -> {keys[:1]} ({d['confidence']})")
                    continue
                top1 += keys[:1] == [r["expect"]]
                top3 += r["expect"] in keys[:3]
                if d["action"] == "answer":
                    if keys[0] == r["expect"]:
                        answered_right += 1
                    else:
                        answered_wrong += 1
                        if args.verbose:
                            print(f"  wrong answer: {r['q']} -> {keys[0]} (want {r['expect']}, {d['confidence']})")
                else:
                    ho_false += 1
                    if args.verbose:
                        print(f"  handed over: {r['q']} -> {keys[:1]} (want {r['expect']}, {d['confidence']})")
            elapsed = time.perf_counter() - started
    finally:
        cleanup()
    n = len(answerable)
    print(f"FAQ set: {len(rows)} questions ({n} answerable over {len(set(r['expect'] for r in answerable))} "
          f"entries, {len(rows) - n} to hand over); threshold {settings['confidence_threshold']}")
    print(f"retrieval top-1 accuracy: {top1 / n:.1%}   top-3 accuracy: {top3 / n:.1%}")
    print(f"bot answered: {answered_right + answered_wrong}/{n} ({answered_right} right, {answered_wrong} wrong; "
          f"answer precision {answered_right / max(1, answered_right + answered_wrong):.1%})")
    handed = ho_true + ho_false
    print(f"hand-over precision: {ho_true / max(1, handed):.1%} ({ho_true}/{handed})   "
          f"recall: {ho_true / max(1, ho_true + ho_missed):.1%} ({ho_true}/{ho_true + ho_missed})")
    print(f"{len(rows) / elapsed:.0f} questions/s")


if __name__ == "__main__":
    main()
