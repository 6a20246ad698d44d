"""Ledger storage: customers, accounts, sub-account snapshots, journals, entries, holds, lots, consumes."""
import peewee as pw

from app.db import BaseModel
from app.platform import clock  # the controllable clock (tests, replays)


class LedgerCustomer(BaseModel):
    external_ref = pw.CharField(max_length=200, unique=True)
    kind = pw.CharField(max_length=20)  # user | merchant
    created_at = pw.DateTimeField(default=clock.now)


class LedgerAccount(BaseModel):
    """One account of a customer (or a system account when customer is NULL)."""
    customer = pw.ForeignKeyField(LedgerCustomer, null=True, backref="accounts", index=True)
    type = pw.CharField(max_length=40)  # cash, points, credit ... or the system account code
    label = pw.CharField(max_length=100, default="default")
    asset = pw.CharField(max_length=20)
    is_system = pw.BooleanField(default=False)
    debit_blocked = pw.BooleanField(default=False)
    credit_blocked = pw.BooleanField(default=False)
    block_reason = pw.TextField(null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("customer", "type", "label", "asset"), True),)


class LedgerBalance(BaseModel):
    """Snapshot of one sub-account (customer) or one shard of a system account; the only mutable money row."""
    account = pw.ForeignKeyField(LedgerAccount, backref="balances")
    sub = pw.CharField(max_length=20)  # available | cashback | frozen | overdraft | main (system)
    shard = pw.IntegerField(default=0)
    asset = pw.CharField(max_length=20)
    balance_minor = pw.BigIntegerField(default=0)

    class Meta:
        indexes = ((("account", "sub", "shard"), True),)


class LedgerJournal(BaseModel):
    """One movement (流水). Append-only: never updated or deleted (a trigger enforces it)."""
    type = pw.CharField(max_length=40)
    client = pw.CharField(max_length=64)
    idempotency_key = pw.CharField(max_length=220, null=True)
    external_ref = pw.CharField(max_length=200, null=True, index=True)
    request_digest = pw.CharField(max_length=64, null=True)
    policy_version = pw.CharField(max_length=64, null=True)
    rule = pw.CharField(max_length=200, null=True)
    actor = pw.CharField(max_length=200)
    metadata = pw.TextField(null=True)  # JSON
    created_at = pw.DateTimeField(default=clock.now, index=True)

    class Meta:
        # NULL keys are distinct on both backends, so only keyed journals are unique per client.
        indexes = ((("client", "idempotency_key"), True),)


class LedgerEntry(BaseModel):
    """One leg of a journal. Append-only; balance_after is the snapshot row's value after this entry."""
    journal = pw.ForeignKeyField(LedgerJournal, backref="entries", index=True)
    balance = pw.ForeignKeyField(LedgerBalance, index=True)
    # no index of their own: (account, id) and (customer, id) below lead with them (m0202)
    account = pw.ForeignKeyField(LedgerAccount, index=False)
    customer = pw.ForeignKeyField(LedgerCustomer, null=True, index=False)
    sub = pw.CharField(max_length=20)
    asset = pw.CharField(max_length=20)
    amount_minor = pw.BigIntegerField()
    balance_after_minor = pw.BigIntegerField()
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("customer", "id"), False), (("account", "id"), False))


class LedgerHold(BaseModel):
    """Frozen amount: withdraw (held -> settled | released | expired) or risk freeze (unfrozen by amount)."""
    account = pw.ForeignKeyField(LedgerAccount, index=True)
    customer = pw.ForeignKeyField(LedgerCustomer, index=True)
    kind = pw.CharField(max_length=20)  # withdraw | risk
    state = pw.CharField(max_length=20, default="held", index=True)
    amount_minor = pw.BigIntegerField()
    remaining_minor = pw.BigIntegerField()
    settled_minor = pw.BigIntegerField(default=0)
    reason = pw.TextField(null=True)
    external_ref = pw.CharField(max_length=200, null=True)
    journal = pw.ForeignKeyField(LedgerJournal)
    resolved_journal = pw.ForeignKeyField(LedgerJournal, null=True)
    expires_at = pw.DateTimeField(null=True, index=True)
    created_at = pw.DateTimeField(default=clock.now)
    resolved_at = pw.DateTimeField(null=True)


class LedgerLot(BaseModel):
    """A granted batch of points / red packets / vouchers with an expiry; drained earliest-expiring first."""
    account = pw.ForeignKeyField(LedgerAccount, index=True)
    customer = pw.ForeignKeyField(LedgerCustomer, index=True)
    asset = pw.CharField(max_length=20)
    amount_minor = pw.BigIntegerField()
    remaining_minor = pw.BigIntegerField()
    expires_at = pw.DateTimeField(null=True, index=True)
    state = pw.CharField(max_length=20, default="open", index=True)  # open | spent | expired
    journal = pw.ForeignKeyField(LedgerJournal)
    created_at = pw.DateTimeField(default=clock.now)


class LedgerConsume(BaseModel):
    """What a consume took from each sub-account and how much of it was refunded (the refund counter row)."""
    journal = pw.ForeignKeyField(LedgerJournal, unique=True)
    account = pw.ForeignKeyField(LedgerAccount)
    payee = pw.ForeignKeyField(LedgerAccount)
    amount_minor = pw.BigIntegerField()
    cashback_minor = pw.BigIntegerField(default=0)
    available_minor = pw.BigIntegerField(default=0)
    overdraft_minor = pw.BigIntegerField(default=0)
    refunded_cashback_minor = pw.BigIntegerField(default=0)
    refunded_available_minor = pw.BigIntegerField(default=0)
    refunded_overdraft_minor = pw.BigIntegerField(default=0)


class LedgerReconciliation(BaseModel):
    """A stored reconciliation report (the periodic job keeps drift on record)."""
    at = pw.DateTimeField(default=clock.now, index=True)
    ok = pw.BooleanField()
    report = pw.TextField()


MODELS = [LedgerCustomer, LedgerAccount, LedgerBalance, LedgerJournal, LedgerEntry, LedgerHold,
          LedgerLot, LedgerConsume, LedgerReconciliation]

# Partial indexes over the open lots/holds that expiry and draining scan (created by migration m0200).
LedgerLot.add_index(LedgerLot.index(LedgerLot.account, LedgerLot.expires_at, name="ledger_lot_open",
                                    where=pw.SQL("\"state\" = 'open'")))
LedgerHold.add_index(LedgerHold.index(LedgerHold.expires_at, name="ledger_hold_open",
                                      where=pw.SQL("\"state\" = 'held'")))


class LedgerLotUse(BaseModel):
    """Which lot paid how much of a recorded lot spend, and how much of it was refunded (the refund counter)."""
    journal = pw.ForeignKeyField(LedgerJournal, index=True)  # the spend
    lot = pw.ForeignKeyField(LedgerLot)
    seq = pw.IntegerField()  # order of use within the spend (refunds go back in reverse)
    amount_minor = pw.BigIntegerField()
    refunded_minor = pw.BigIntegerField(default=0)

    class Meta:
        indexes = ((("journal", "seq"), True),)


MODELS_0201 = [LedgerLotUse]
