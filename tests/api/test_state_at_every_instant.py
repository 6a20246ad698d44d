"""Time-dependent facts are computed from the clock when read or acted on, not when a job last ran."""
import datetime as dt

import pytest

from app.platform import clock
from tests.ledger_factories import ref


@pytest.fixture()
def moved_clock():
    """Move the app clock (the jobs never run in between); restored afterwards."""
    yield clock.set_now
    clock.set_now(None)


@pytest.fixture()
def customer(http):
    cref = ref("inst")
    assert http.post("/v1/ledger/customers", json={"external_ref": cref}).status_code == 201
    assert http.post("/v1/ledger/recharge", json={"customer": cref, "amount": 10_000}, key=ref("k")).status_code == 201
    return cref


def _account(http, cref, account_type):
    return next(a for a in http.get(f"/v1/ledger/customers/{cref}/balances").json()["accounts"]
                if a["account_type"] == account_type)


def test_a_withdrawal_hold_cannot_be_settled_after_its_expiry(http, customer, moved_clock):
    hold = http.post("/v1/ledger/withdraw", json={"customer": customer, "amount": 4000}, key=ref("k")).json()["hold"]
    expires = dt.datetime.fromisoformat(hold["expires_at"].rstrip("Z"))
    moved_clock(expires + dt.timedelta(seconds=1))  # the minute job has not run
    r = http.get(f"/v1/ledger/holds/{hold['id']}")
    assert r.json()["state"] == "expired"
    r = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"], "amount": 4000}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "hold-expired", r.text
    assert _account(http, customer, "cash")["sub_accounts"]["frozen"] == 4000  # nothing paid out
    moved_clock(expires - dt.timedelta(seconds=1))  # just before expiry, settling works
    r = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"], "amount": 4000}, key=ref("k"))
    assert r.status_code == 201 and r.json()["hold"]["state"] == "settled", r.text


def test_a_settle_amount_must_be_positive(http, customer):
    hold = http.post("/v1/ledger/withdraw", json={"customer": customer, "amount": 100}, key=ref("k")).json()["hold"]
    r = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"], "amount": 0}, key=ref("k"))
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/amount", r.text
    assert http.get(f"/v1/ledger/holds/{hold['id']}").json()["state"] == "held"


def test_spendable_of_a_lot_account_leaves_out_expired_lots_before_the_job(http, customer, moved_clock):
    now = clock.now()
    soon = (now + dt.timedelta(hours=1)).isoformat() + "Z"
    later = (now + dt.timedelta(days=30)).isoformat() + "Z"
    for amount, expires in ((300, soon), (200, later)):
        r = http.post("/v1/ledger/grant-lot", json={"customer": customer, "asset": "POINTS", "amount": amount,
                                                    "expires_at": expires}, key=ref("k"))
        assert r.status_code == 201, r.text
    assert _account(http, customer, "points")["spendable"] == 500
    moved_clock(now + dt.timedelta(hours=2))  # the first lot expired; the hourly job has not run
    points = _account(http, customer, "points")
    assert points["spendable"] == 200 and points["sub_accounts"]["available"] == 500
    lots = http.get(f"/v1/ledger/customers/{customer}/lots?asset=POINTS").json()
    lots = lots["items"] if isinstance(lots, dict) else lots
    assert [lot["remaining"] for lot in lots] == [200]
    r = http.post("/v1/ledger/spend-lot", json={"customer": customer, "asset": "POINTS", "amount": 201}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "insufficient-funds", r.text  # reads and spends agree


def test_the_member_view_leaves_out_expired_points(http, moved_clock):
    from tests.membership_factories import order, post, uid
    m = uid("exp")
    assert post(http, order(m, 100000))["points"]["delta"] > 0
    before = http.get(f"/v1/members/{m}").json()["points"]
    assert before["balance"] > 0 and before["lots"]
    last = max(dt.datetime.fromisoformat(lot["expires_at"].rstrip("Z")) for lot in before["lots"]
               if lot["expires_at"])
    moved_clock(last + dt.timedelta(seconds=1))
    after = http.get(f"/v1/members/{m}").json()["points"]
    assert after["balance"] == 0 and after["lots"] == []
