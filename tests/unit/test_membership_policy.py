"""Membership policies: sample files valid (both modes), cross-checks, expiry dates, deduction methods."""
import datetime as dt
from pathlib import Path

import pytest
import yaml

from app.platform import timefmt
from app.models.membership import GrowthEntry, Member
from app.schemas import errors_of
from app.services import membership
from app.services.membership import growth as membership_growth, policy as mp
from tests.membership_factories import uid

ROOT = Path(__file__).resolve().parents[2]
SETS = {"ladder": ROOT, "independent": ROOT / "docs" / "samples" / "independent"}
KINDS = ("membership", "points", "benefits", "plans")


class FakeSet:
    """Just enough of a policy set: documents by kind, rulesets by name."""

    def __init__(self, docs, version="test"):
        self.version = version
        self.docs = docs

    def get(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]


def load(base):
    docs = []
    for sub in ("policies", "rules"):
        for path in sorted((base / sub).glob("*.yaml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            if doc.get("kind") in KINDS or (doc.get("kind") == "ruleset" and doc["name"] in ("growth", "points")):
                doc["_file"] = f"{sub}/{path.name}"
                docs.append(doc)
    return docs


@pytest.mark.parametrize("name", list(SETS))
def test_sample_sets_are_valid(name):
    docs = load(SETS[name])
    assert {d["kind"] for d in docs} == set(KINDS) | {"ruleset"}
    for d in docs:
        if d["kind"] in KINDS:
            body = {k: v for k, v in d.items() if k != "_file"}
            assert errors_of(f"policies/{d['kind']}.json", body) == [], d["_file"]
    assert membership.cross_check_errors(FakeSet(docs)) == []
    cfg = mp.Config(FakeSet(docs))
    assert cfg.mode == name


def _docs_with(**changes):
    docs = load(ROOT)
    for d in docs:
        if d["kind"] in changes:
            changes[d["kind"]](d)
    return docs


def test_cross_checks_name_each_problem():
    def bad_levels(d):
        d["levels"][2]["threshold"] = 500
    def bad_benefits(d):
        d["levels"]["青铜"] = ["nope"]
        d["plans"]["ghost_plan"] = ["free_shipping"]
    errs = membership.cross_check_errors(FakeSet(_docs_with(membership=bad_levels, benefits=bad_benefits)))
    text = "\n".join(f"{f} {p} {m}" for f, p, m in errs)
    assert "policies/membership.yaml $.levels[2].threshold level thresholds must strictly ascend" in text
    assert "unknown level '青铜'" in text and "unknown benefit 'nope'" in text and "unknown plan 'ghost_plan'" in text

    def indep(d):
        d["mode"] = "independent"
    errs = membership.cross_check_errors(FakeSet(_docs_with(membership=indep)))
    assert any("independent mode" in m for _, _, m in errs)


def test_schema_rejects_negative_caps_and_unknown_fields():
    doc = {k: v for k, v in load(ROOT)[0].items() if k != "_file"}
    assert doc["kind"] in KINDS
    bad = yaml.safe_load(yaml.safe_dump(doc, allow_unicode=True))
    if bad["kind"] == "membership":
        bad["growth"]["caps"][0]["max"] = -1
        bad["surprise"] = True
        pointers = {e["pointer"] for e in errors_of("policies/membership.json", bad)}
        assert "/growth/caps/0/max" in pointers and "" in pointers


TZ = dt.timezone(dt.timedelta(hours=8))


def _cfg(**points_expiry):
    docs = load(ROOT)
    for d in docs:
        if d["kind"] == "points":
            d["expiry"] = points_expiry
    return mp.Config(FakeSet(docs))


@pytest.mark.parametrize("expiry,earned,expires", [
    ({"mode": "natural_year_end"}, "2025-03-01T12:00+08:00", "2026-01-01T00:00+08:00"),
    ({"mode": "natural_year_end"}, "2025-12-31T23:59+08:00", "2026-01-01T00:00+08:00"),
    ({"mode": "natural_year_end"}, "2025-12-31T16:30+00:00", "2027-01-01T00:00+08:00"),  # already 2026 in +08
    ({"mode": "natural_year_end", "years_after": 1}, "2025-03-01T12:00+08:00", "2027-01-01T00:00+08:00"),
    ({"mode": "fiscal_year_end", "fiscal_year_end": "03-31"}, "2025-03-31T23:00+08:00", "2025-04-01T00:00+08:00"),
    ({"mode": "fiscal_year_end", "fiscal_year_end": "03-31"}, "2025-04-01T00:00+08:00", "2026-04-01T00:00+08:00"),
    ({"mode": "rolling_months", "months": 12}, "2025-05-20T10:00+08:00", "2026-05-20T10:00+08:00"),
    ({"mode": "rolling_months", "months": 1}, "2025-01-31T10:00+08:00", "2025-02-28T10:00+08:00"),
])
def test_points_expiry_per_policy(expiry, earned, expires):
    cfg = _cfg(**expiry)
    got = mp.points_expiry(cfg, timefmt.parse(earned, "/at", offset_required=True))
    assert got == timefmt.parse(expires, "/at", offset_required=True)


def _member_with_history(entries, joined, level, growth):
    ref = uid("ded")
    Member.create(member_ref=ref, joined_at=joined, growth=growth, level=level, level_since=joined)
    bal = 0
    for at, delta in entries:
        bal += delta
        GrowthEntry.create(member_ref=ref, entry_key=uid("k"), kind="earn", delta=delta, balance_after=bal,
                           rule="t", policy_version="t", reason="t", at=at)
    return ref


def test_weighted_window_anniversary_deduction_keeps_levels_inside_validity(db_conn):
    docs = load(SETS["independent"])
    cfg = mp.Config(FakeSet(docs))
    u = lambda s: timefmt.parse(s, "/at", offset_required=True)  # noqa: E731
    joined = u("2022-06-15T10:00+08:00")
    # earned 1000 in each of the three years before the 2025-06-15 anniversary, plus 400 before that
    entries = [(u("2021-12-01T00:00+08:00"), 400), (u("2022-08-01T00:00+08:00"), 1000),
               (u("2023-08-01T00:00+08:00"), 1000), (u("2024-08-01T00:00+08:00"), 1000)]
    ref = _member_with_history(entries, joined, "黄金会员", 3400)
    out = membership_growth.deduct_member(cfg, ref, u("2025-06-16T09:00+08:00"))
    # keep 100% of the last year + 50% + 25% = 1000 + 500 + 250 = 1750 -> deduct 1650
    assert out["deducted"] == 3400 - 1750
    assert out["entry"]["rule"].startswith("membership.deduction.weighted_window")
    assert out["level_change"]["to"] == "白银会员"  # 1750 < 2000
    assert membership_growth.deduct_member(cfg, ref, u("2025-06-20T09:00+08:00")) is None  # once per anniversary

    # inside the no-demotion validity (12 months from promotion) the level is kept
    ref2 = _member_with_history(entries, joined, "黄金会员", 3400)
    Member.update(level_valid_until=u("2025-09-01T00:00+08:00")).where(Member.member_ref == ref2).execute()
    out2 = membership_growth.deduct_member(cfg, ref2, u("2025-06-16T09:00+08:00"))
    assert out2["deducted"] == 1650 and out2["level_change"] is None
    assert Member.get(Member.member_ref == ref2).level == "黄金会员"


def test_percentage_deduction(db_conn):
    docs = load(ROOT)
    for d in docs:
        if d["kind"] == "membership":
            d["deduction"] = {"schedule": "calendar", "date": "07-01", "method": "percentage", "percentage": 30}
    cfg = mp.Config(FakeSet(docs))
    ref = _member_with_history([(timefmt.parse("2025-01-01T00:00+08:00", "/at", offset_required=True), 12000)],
                               timefmt.parse("2024-12-01T00:00+08:00", "/at", offset_required=True), "金牌", 12000)
    out = membership_growth.deduct_member(cfg, ref, timefmt.parse("2025-07-01T00:00+08:00", "/at", offset_required=True))
    assert out["deducted"] == 3600 and out["growth"] == 8400 and out["level_change"]["to"] == "银牌"


def test_policy_check_cli_accepts_both_sample_sets():
    """`patron policy check DIR` (a subprocess: the CLI opens its own app and database)."""
    import subprocess
    import sys
    for base, flags in ((SETS["independent"], ["--partial"]), (ROOT, [])):
        out = subprocess.run([sys.executable, "-m", "app.cli", "policy", "check", str(base), *flags], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 error(s)" in out.stdout + out.stderr


def test_seed_demo_is_idempotent(db_conn):
    from app.services import ledger
    ledger.seed_demo()
    membership.seed_demo()
    membership.seed_demo()
    view = membership.view("demo-user")
    assert view["growth"] == 2588 + 5 and view["level"]["name"] == "银牌"
    assert view["paid"]["active"] is True
