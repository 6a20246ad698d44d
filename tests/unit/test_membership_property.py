"""Property: after any sequence of events, growth = Σ its explained entries, each balance_after chains, growth >= 0."""
from hypothesis import HealthCheck, given, settings, strategies as st

from app.models.membership import GrowthEntry, Member
from app.services.membership import events
from tests.membership_factories import uid

STEP = st.one_of(
    st.tuples(st.just("order_paid"), st.integers(0, 500000)),
    st.tuples(st.just("order_refunded"), st.integers(0, 600000)),
    st.tuples(st.sampled_from(["sign_in", "share", "review_posted", "task_completed", "active_day"]), st.just(0)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(STEP, st.integers(1, 3)), min_size=1, max_size=12))
def test_growth_equals_sum_of_entries(db_conn, steps):
    m = uid("prop")
    orders = []
    for i, ((type_, amount), day) in enumerate(steps):
        ev = {"event_id": uid("pe"), "member_id": m, "type": type_,
              "occurred_at": f"2026-10-0{day}T1{i % 10}:00:00+08:00"}
        if type_ == "order_paid":
            ref = uid("o")
            orders.append(ref)
            ev.update(amount_fen=amount, order_ref=ref)
        elif type_ == "order_refunded":
            ev.update(amount_fen=amount, order_ref=orders[-1] if orders else uid("o"))
        events.ingest(ev, "tests")
        member = Member.get(Member.member_ref == m)
        rows = list(GrowthEntry.select().where(GrowthEntry.member_ref == m).order_by(GrowthEntry.id))
        assert member.growth == sum(r.delta for r in rows) >= 0
        running = 0
        for r in rows:
            running += r.delta
            assert r.balance_after == running and r.rule and r.policy_version and r.reason
