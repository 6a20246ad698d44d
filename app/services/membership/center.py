"""Member center (会员中心): the one view a shop's member page needs; personal data masked everywhere it leaves."""
import re

from app.db import transactional
from app.errors import Problem, validation_failed
from app.models.membership import MallRedemption, MemberProfile
from app.platform import clock
from app.services.membership import mall as mmall
from app.services.membership import policy as mp
from app.services.membership import vouchers

_PHONE = re.compile(r"\+?[0-9][0-9 -]{4,24}")


def mask_phone(phone):
    """138****5678: the first 3 and last 4 digits; shorter numbers keep only the last 2."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) >= 11:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    return "*" * max(0, len(digits) - 2) + digits[-2:]


def _profile_dict(p):
    return {"nickname": p.nickname if p else None, "phone_masked": mask_phone(p.phone) if p else None,
            "has_phone": bool(p and p.phone)}


def set_profile(member_ref, body):
    """Set nickname and/or phone; returns the masked profile (the phone never comes back in clear)."""
    if "phone" in body and body["phone"] and not _PHONE.fullmatch(body["phone"]):
        # never echo the value: it is personal data
        raise validation_failed([{"pointer": "/phone", "validator": "format",
                                  "message": "a phone number: digits, optionally + and separators"}])

    @transactional()
    def run():
        MemberProfile.insert(member_ref=member_ref).on_conflict_ignore().execute()
        changes = {k: body[k] for k in ("nickname", "phone") if k in body}
        if changes:
            changes["updated_at"] = clock.now()
            MemberProfile.update(**changes).where(MemberProfile.member_ref == member_ref).execute()
        return _profile_dict(MemberProfile.get(MemberProfile.member_ref == member_ref))
    return run()


def _points_by_expiry(lots):
    out = {}
    for lot in lots:
        key = lot["expires_at"]
        out[key] = out.get(key, 0) + int(lot["remaining"] or 0)
    return [{"expires_at": k, "points": v} for k, v in out.items()]


def view(member_ref):
    """Profile (masked), level and progress, benefits (level, paid level, plan, mall grants), points by
    expiry, vouchers and red packets held, paid status with the paid ladder, offers, open mall redemptions."""
    from app.services import membership
    from app.services.membership import paid
    base = membership.view(member_ref)
    cfg = mp.current()
    at = clock.now()
    now_points = [lot for lot in base["points"]["lots"] if vouchers._live(lot["expires_at"], at)]
    held = vouchers.held(member_ref, at)
    granted = mmall.granted_benefits(cfg, member_ref, at)
    ladder = paid.status(cfg, member_ref, at)
    pending = [mmall.redemption_dict(r) for r in MallRedemption.select().where(
        (MallRedemption.member_ref == member_ref) & (MallRedemption.status == "pending_fulfilment"))]
    return {
        "member_id": member_ref, "policy_version": base["policy_version"], "mode": base["mode"],
        "profile": _profile_dict(MemberProfile.get_or_none(MemberProfile.member_ref == member_ref)),
        "level": base["level"], "growth": base["growth"], "next_level": base["next_level"],
        "benefits": base["benefits"] + ladder["benefits"] + granted, "service": base["service"],
        "points": {"balance": sum(int(lot["remaining"] or 0) for lot in now_points),
                   "by_expiry": _points_by_expiry(now_points)},
        "vouchers": [v for v in held if v["kind"] == "voucher"],
        "red_packets": {"balance_fen": sum(v["remaining_fen"] for v in held if v["kind"] == "red_packet"),
                        "lots": [v for v in held if v["kind"] == "red_packet"]},
        "paid": dict(base["paid"], ladder=ladder["ladder"]),
        "offers": base["offers"] + ladder["offers"],
        "mall": {"pending_fulfilment": pending},
    }


def profile(member_ref):
    p = MemberProfile.get_or_none(MemberProfile.member_ref == member_ref)
    if p is None:
        raise Problem(404, "profile-not-found", "Profile not found", f"member {member_ref!r} has no profile")
    return _profile_dict(p)
