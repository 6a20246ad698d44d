"""Stored policy sets: save + activate atomically, the active pointer, history."""
import json

from app.platform import clock, paging
from app.platform.timefmt import iso
from app.db import db, for_update, transactional
from app.errors import Problem

from app.models.policy import PolicyActivation, PolicyActive, PolicyVersion
from app.platform import audit


def tables_ready():
    return db.obj is not None and db.table_exists(PolicyActive._meta.table_name)


def current():
    """(version, seq) of the active set, or (None, 0)."""
    row = PolicyActive.get_or_none(PolicyActive.id == 1)
    return (row.version, row.seq) if row else (None, 0)


def files_of(version):
    row = PolicyVersion.get_or_none(PolicyVersion.version == version)
    return None if row is None else json.loads(row.files)


@transactional()
def save_and_activate(policy_set, actor, note=None, if_match=None):
    """Store the set (if new) and make it the active one, in one transaction.

    ``if_match``: the version the caller saw active (HTTP If-Match); another one active now is 412,
    so two operators cannot silently overwrite each other's activation.

    Returns:
        (previous version, changed: bool).
    """
    # lock the pointer first so concurrent applies serialise in one order
    row = for_update(PolicyActive.select().where(PolicyActive.id == 1)).get_or_none()
    if row is None:
        PolicyActive.insert(id=1, version=None, seq=0).execute()
        row = for_update(PolicyActive.select().where(PolicyActive.id == 1)).get()
    if PolicyVersion.get_or_none(PolicyVersion.version == policy_set.version) is None:
        PolicyVersion.create(version=policy_set.version, files=json.dumps(policy_set.files, ensure_ascii=False),
                             file_count=len(policy_set.files), created_by=actor)
    previous = row.version
    if if_match is not None and if_match != previous:
        raise Problem(412, "precondition-failed", "Precondition failed",
                      f"the active policy set is {previous}, not {if_match}; reload it and apply again",
                      active=previous)
    if previous == policy_set.version:
        return previous, False
    seq = row.seq + 1
    now = clock.now()
    PolicyActive.update(version=policy_set.version, seq=seq, activated_by=actor, activated_at=now).where(
        PolicyActive.id == 1).execute()
    PolicyActivation.create(seq=seq, version=policy_set.version, previous_version=previous,
                            activated_by=actor, activated_at=now, note=note)
    audit.record(actor, "policy.apply", subject=policy_set.version, before={"version": previous},
                 after={"version": policy_set.version, "seq": seq}, policy_version=policy_set.version,
                 files=len(policy_set.files), note=note)
    return previous, True


def history(limit=100, cursor=None):
    """Activations, newest first (keyset on seq).

    Returns:
        (items, next_cursor or None).
    """
    rows, nxt = paging.keyset(PolicyActivation.select(), PolicyActivation.seq, cursor, limit)
    return [{"seq": a.seq, "version": a.version, "previous_version": a.previous_version,
             "activated_by": a.activated_by, "activated_at": iso(a.activated_at), "note": a.note}
            for a in rows], nxt


def versions(limit=100, cursor=None):
    """Stored versions, newest first (keyset on (created_at, version)).

    Returns:
        (items, next_cursor or None).
    """
    q = PolicyVersion.select(PolicyVersion.version, PolicyVersion.file_count, PolicyVersion.created_by,
                             PolicyVersion.created_at)
    rows, nxt = paging.keyset(q, (PolicyVersion.created_at, PolicyVersion.version), cursor, limit)
    return [{"version": v.version, "files": v.file_count, "created_by": v.created_by,
             "created_at": iso(v.created_at)} for v in rows], nxt
