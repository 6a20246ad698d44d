"""Membership jobs: yearly growth deduction + re-level, paid-plan renewal/lapse, monthly coupons (ids/keys only, own connection)."""
import logging

from app.db import db
from app.platform import clock
from app.platform import timefmt
from jobs import job, progress

log = logging.getLogger(__name__)

PERIODIC = [
    ("jobs.membership.deduct_growth", "10 0 * * *"),
    ("jobs.membership.renew_plans", "*/5 * * * *"),
    ("jobs.membership.issue_coupons", "20 0 * * *"),
]


def _at(at):
    return timefmt.parse(at, "/at", offset_required=True) if at else clock.now()


@job(retries=2)  # each member's deduction is keyed (deduct:<member>:<date>): safe to repeat
def deduct_growth(at=None):
    """Apply the periodic growth deduction due at ``at`` (RFC 3339; default now) to every member, then re-level.

    Returns:
        {"members", "deducted", "demoted"}.
    """
    from app.services.membership.growth import deduct_all
    with db.connection_context():
        out = deduct_all(_at(at), progress=progress)
    log.info("growth deduction: %s", out)
    return out


@job(retries=2)  # renewals are keyed per (subscription, period start); status moves are guarded by row locks
def renew_plans(at=None):
    """Renew due paid plans (retry once on a short balance), then expire or lapse ended ones.

    Returns:
        {"renewed", "failed", "lapsed", "expired"}.
    """
    from app.services.membership.plans import run_due
    with db.connection_context():
        out = run_due(_at(at))
    log.info("plan renewal: %s", out)
    return out


@job(retries=2)  # unique (member, benefit, month) row + keyed ledger grants: safe to repeat
def issue_coupons(at=None):
    """Issue this month's coupon benefits (voucher lots) to members entitled to them.

    Returns:
        {"month", "issued"}.
    """
    from app.services.membership.benefits import issue_coupons as run
    with db.connection_context():
        return run(_at(at), progress=progress)
