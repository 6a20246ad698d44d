"""Property-based: random sequences of ledger operations keep every invariant after every step."""
import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.platform import clock, timefmt
from app.errors import Problem
from tests.ledger_factories import ref

OPS = ["recharge", "consume", "consume_merchant", "refund", "withdraw", "settle_hold", "release_hold", "freeze",
       "unfreeze", "transfer", "settlement_in", "settlement_out", "credit_draw", "credit_repay", "repay_overdraft",
       "grant_lot", "spend_lot", "expire_lots", "block", "unblock"]

step = st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(1, 4000))


def _totals(ledger, cref):
    """Net customer-visible holdings per asset (all sub-accounts, overdraft negative)."""
    out = {}
    for a in ledger.balances(cref)["accounts"]:
        out[a["asset"]] = out.get(a["asset"], 0) + sum(a["sub_accounts"].values())
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_random_operation_sequences_keep_invariants(app, steps):
    from app.db import db
    from app.models.ledger import LedgerLot
    from app.services import ledger
    import jobs.ledger as jl

    with app.app_context(), db.connection_context():
        users = [ref("pa"), ref("pb")]
        merchant = ref("pm")
        for u in users:
            ledger.ensure_customer(u)
        ledger.ensure_customer(merchant, "merchant")
        everyone = users + [merchant]
        consumes, holds, freezes = [], [], []
        expected = {c: {"CNY": 0, "POINTS": 0} for c in everyone}

        for op, pick, amount in steps:
            u, other = users[pick % 2], users[(pick + 1) % 2]
            delta = {}
            try:
                if op == "recharge":
                    ledger.apply_operation("recharge", {"customer": u, "amount": amount}, "prop")
                    delta = {u: amount}
                elif op in ("consume", "consume_merchant"):
                    body = {"customer": u, "amount": amount}
                    if op == "consume_merchant":
                        body["payee"] = {"customer": merchant}
                    r = ledger.apply_operation("consume", body, "prop")
                    consumes.append((r["consume"]["journal_id"], u, op == "consume_merchant"))
                    delta = {u: -amount, **({merchant: amount} if op == "consume_merchant" else {})}
                elif op == "refund" and consumes:
                    cid, payer, to_merchant = consumes[pick % len(consumes)]
                    ledger.apply_operation("refund", {"consume_id": cid, "amount": amount}, "prop")
                    delta = {payer: amount, **({merchant: -amount} if to_merchant else {})}
                elif op == "withdraw":
                    holds.append(ledger.apply_operation("withdraw", {"customer": u, "amount": amount},
                                                        "prop")["hold"]["id"])
                elif op == "settle_hold" and holds:
                    h = holds[pick % len(holds)]
                    settled = amount % (ledger.hold(h)["remaining"] + 1)
                    ledger.apply_operation("settle_hold", {"hold_id": h, "amount": settled}, "prop")
                    delta = {_owner(ledger, h, users): -settled}
                elif op == "release_hold" and holds:
                    ledger.apply_operation("release_hold", {"hold_id": holds[pick % len(holds)]}, "prop")
                elif op == "freeze":
                    freezes.append(ledger.apply_operation("freeze", {"customer": u, "amount": amount,
                                                                     "reason": "prop"}, "prop")["hold"]["id"])
                elif op == "unfreeze" and freezes:
                    ledger.apply_operation("unfreeze", {"hold_id": freezes[pick % len(freezes)],
                                                        "amount": amount, "reason": "prop"}, "prop")
                elif op == "transfer":
                    ledger.apply_operation("transfer", {"from": {"customer": u}, "to": {"customer": other},
                                                        "amount": amount}, "prop")
                    delta = {u: -amount, other: amount}
                elif op == "settlement_in":
                    ledger.apply_operation("settlement", {"customer": u, "amount": amount, "direction": "in",
                                                          "sub": "cashback" if pick % 2 else "available",
                                                          "bill_ref": "b"}, "prop")
                    delta = {u: amount}
                elif op == "settlement_out":
                    ledger.apply_operation("settlement", {"customer": u, "amount": amount, "direction": "out",
                                                          "bill_ref": "b"}, "prop")
                    delta = {u: -amount}
                elif op == "credit_draw":
                    ledger.apply_operation("credit_draw", {"customer": u, "amount": amount * 10}, "prop")
                elif op in ("credit_repay", "repay_overdraft"):
                    ledger.apply_operation("credit_repay", {"customer": u, "amount": amount, "account_type":
                                                            "credit" if op == "credit_repay" else "cash"}, "prop")
                elif op == "grant_lot":
                    days = (pick % 4) - 1  # some lots are already expired
                    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).isoformat()
                    ledger.apply_operation("grant_lot", {"customer": u, "asset": "POINTS", "amount": amount,
                                                         "expires_at": expires}, "prop")
                    delta = {u: ("POINTS", amount)}
                elif op == "spend_lot":
                    ledger.apply_operation("spend_lot", {"customer": u, "asset": "POINTS", "amount": amount}, "prop")
                    delta = {u: ("POINTS", -amount)}
                elif op == "expire_lots":
                    before = {c: _totals(ledger, c).get("POINTS", 0) for c in users}
                    jl.expire_lots()
                    delta = {c: ("POINTS", _totals(ledger, c).get("POINTS", 0) - before[c]) for c in users}
                    for c in users:  # nothing expired may remain open
                        assert not [lot for lot in ledger.lots(c, "POINTS")
                                    if lot["expires_at"] and timefmt.parse(lot["expires_at"], "/e") < clock.now()]
                elif op == "block":
                    ledger.apply_operation("block", {"customer": u, "debit": pick % 2 == 0,
                                                     "credit": pick % 2 == 1, "reason": "prop"}, "prop")
                elif op == "unblock":
                    ledger.apply_operation("unblock", {"customer": u, "debit": True, "credit": True,
                                                       "reason": "prop"}, "prop")
            except Problem as exc:
                assert exc.status in (404, 409, 422), exc.to_dict()
                delta = {}
            for cref, d in delta.items():
                asset, d = d if isinstance(d, tuple) else ("CNY", d)
                expected[cref][asset] += d

            for cref in everyone:
                got = _totals(ledger, cref)
                assert got.get("CNY", 0) == expected[cref]["CNY"], (op, cref)
                assert got.get("POINTS", 0) == expected[cref]["POINTS"], (op, cref)
            report = ledger.reconcile(customers=everyone)
            assert report["ok"], (op, {k: v for k, v in report["checks"].items() if not v["ok"]})
        assert LedgerLot.select().where(LedgerLot.remaining_minor < 0).count() == 0


def _owner(ledger, hold_id, users):
    account_id = ledger.hold(hold_id)["account_id"]
    for u in users:
        if any(a["id"] == account_id for a in ledger.balances(u)["accounts"]):
            return u
    raise AssertionError("hold of an unknown account")
