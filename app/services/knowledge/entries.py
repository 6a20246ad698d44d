"""Knowledge entries: write (a new version each time), review before publish, restore, search, suggest, usage.

A version is written by someone with ``knowledge.edit`` and published by someone with
``knowledge.publish`` who did not write it (review by a second person). Search and the bot serve the
published version only, so editing never changes what agents and users see until it is reviewed.
"""
import json

import peewee as pw

from app.db import transactional
from app.errors import Problem, not_found
from app.models.knowledge import KnowledgeEntry, KnowledgeUse, KnowledgeVersion
from app.platform import audit, clock, paging
from app.services.knowledge import search as fts
from app.platform.timefmt import iso

FIELDS = ("title", "body", "category", "tags", "questions")


def _tags(text):
    return [t for t in (text or "").split(" ") if t]


def _pad(tags):
    clean = list(dict.fromkeys(t.strip() for t in tags if t and t.strip()))
    return (" " + " ".join(clean) + " ") if clean else ""


def version_view(v):
    return {"version": v.version, "title": v.title, "body": v.body, "category": v.category,
            "tags": _tags(v.tags), "questions": json.loads(v.questions), "state": v.state, "author": v.author,
            "note": v.note, "restored_from": v.restored_from, "reviewed_by": v.reviewed_by,
            "reviewed_at": iso(v.reviewed_at), "review_note": v.review_note, "created_at": iso(v.created_at)}


def _version(entry_id, number):
    v = KnowledgeVersion.get_or_none((KnowledgeVersion.entry == entry_id) & (KnowledgeVersion.version == number))
    if v is None:
        raise not_found("knowledge version", f"{entry_id}/v{number}")
    return v


def _entry(entry_id, lock=False):
    q = KnowledgeEntry.select().where(KnowledgeEntry.id == entry_id)
    from app.db import is_postgres
    e = (q.for_update() if lock and is_postgres() else q).first()
    if e is None:
        raise not_found("knowledge entry", entry_id)
    return e


def view(entry_id):
    """An entry: its latest version (what editors see) and which version is published."""
    e = _entry(entry_id)
    latest = _version(e.id, e.version)
    out = {"id": e.id, "state": e.state, "version": e.version, "published_version": e.published_version,
           "usage_count": e.usage_count, "created_by": e.created_by, "created_at": iso(e.created_at),
           "updated_at": iso(e.updated_at), "latest": version_view(latest)}
    if e.published_version:
        out["published"] = version_view(_version(e.id, e.published_version))
    return out


def listing(state=None, category=None, limit=50, cursor=None):
    """Entries in the order they were written (keyset on id), optionally in one state and category.

    Returns:
        (items, next_cursor or None).
    """
    q = KnowledgeEntry.select()
    if state:
        q = q.where(KnowledgeEntry.state == state)
    if category:
        q = q.where(KnowledgeEntry.category == category)
    rows, nxt = paging.keyset(q, KnowledgeEntry.id, cursor, limit, desc=False)
    return [{"id": e.id, "title": e.title, "category": e.category, "tags": _tags(e.tags),
             "state": e.state, "version": e.version, "published_version": e.published_version,
             "usage_count": e.usage_count} for e in rows], nxt


def _write_version(e, staff_no, fields, note="", restored_from=None):
    now = clock.now()
    e.version += 1
    KnowledgeVersion.create(entry=e.id, version=e.version, title=fields["title"], body=fields["body"],
                            category=fields["category"], tags=_pad(fields.get("tags") or []),
                            questions=json.dumps(fields.get("questions") or [], ensure_ascii=False),
                            state="draft", author=staff_no, note=note, restored_from=restored_from, created_at=now)
    # a draft replaced before review is superseded: only the newest version can be reviewed
    KnowledgeVersion.update(state="superseded").where(
        (KnowledgeVersion.entry == e.id) & (KnowledgeVersion.version < e.version)
        & (KnowledgeVersion.state.in_(("draft", "in_review")))).execute()
    KnowledgeEntry.update(version=e.version, state="draft", updated_at=now).where(KnowledgeEntry.id == e.id).execute()


@transactional()
def create(staff_no, body):
    """A new entry as a draft (version 1), written by ``staff_no``."""
    now = clock.now()
    e = KnowledgeEntry.create(title=body["title"], category=body["category"], tags=_pad(body.get("tags") or []),
                              state="draft", version=0, created_by=staff_no, created_at=now, updated_at=now)
    _write_version(e, staff_no, body, note=body.get("note", ""))
    audit.record(f"staff:{staff_no}", "knowledge.create", f"knowledge:{e.id}", title=body["title"])
    return e.id


def revise(entry_id, staff_no, body):
    """A new version (draft) of an entry: unchanged fields are carried over from the latest version."""
    @transactional()
    def attempt():
        e = _entry(entry_id, lock=True)
        latest = _version(e.id, e.version)
        fields = {"title": latest.title, "body": latest.body, "category": latest.category,
                  "tags": _tags(latest.tags), "questions": json.loads(latest.questions)}
        fields.update({k: body[k] for k in FIELDS if k in body})
        _write_version(e, staff_no, fields, note=body.get("note", ""))
        audit.record(f"staff:{staff_no}", "knowledge.revise", f"knowledge:{e.id}", version=e.version,
                     changed=sorted(k for k in FIELDS if k in body))
        return e.id
    return view(attempt())


def restore(entry_id, number, staff_no, note=""):
    """A new version copying an old one (it is reviewed again before it is published)."""
    @transactional()
    def attempt():
        e = _entry(entry_id, lock=True)
        old = _version(e.id, number)
        fields = {"title": old.title, "body": old.body, "category": old.category, "tags": _tags(old.tags),
                  "questions": json.loads(old.questions)}
        _write_version(e, staff_no, fields, note=note or f"restored from version {number}", restored_from=number)
        audit.record(f"staff:{staff_no}", "knowledge.restore", f"knowledge:{e.id}", version=e.version,
                     restored_from=number)
        return e.id
    return view(attempt())


def submit(entry_id, staff_no):
    """Ask for review of the latest version."""
    @transactional()
    def attempt():
        e = _entry(entry_id, lock=True)
        v = _version(e.id, e.version)
        if v.state != "draft" and v.state != "rejected":
            raise Problem(409, "not-a-draft", "Not a draft", f"version {v.version} is {v.state}")
        KnowledgeVersion.update(state="in_review").where(KnowledgeVersion.id == v.id).execute()
        KnowledgeEntry.update(state="in_review", updated_at=clock.now()).where(KnowledgeEntry.id == e.id).execute()
        audit.record(f"staff:{staff_no}", "knowledge.submit", f"knowledge:{e.id}", version=v.version)
        return e.id
    return view(attempt())


def review(entry_id, staff_no, approve, note=None, version=None):
    """Publish (or reject) the version in review; the reviewer is not its author.

    Raises:
        Problem: 409 ``not-in-review``; 409 ``version-moved`` when ``version`` is not the one in review;
            403 ``own-version`` when the reviewer wrote it.
    """
    @transactional()
    def attempt():
        e = _entry(entry_id, lock=True)
        v = _version(e.id, e.version)
        if version is not None and version != v.version:
            raise Problem(409, "version-moved", "Version moved",
                          f"version {version} is not the latest (the latest is {v.version})")
        if v.state != "in_review":
            raise Problem(409, "not-in-review", "Not in review", f"version {v.version} is {v.state}")
        if v.author == staff_no:
            raise Problem(403, "own-version", "Own version",
                          "a version is reviewed by someone other than its author")
        now = clock.now()
        if approve:
            KnowledgeVersion.update(state="superseded").where(
                (KnowledgeVersion.entry == e.id) & (KnowledgeVersion.state == "published")).execute()
        state = "published" if approve else "rejected"
        KnowledgeVersion.update(state=state, reviewed_by=staff_no, reviewed_at=now, review_note=note).where(
            KnowledgeVersion.id == v.id).execute()
        changes = {"state": state, "updated_at": now}
        if approve:
            changes.update(published_version=v.version, title=v.title, category=v.category, tags=v.tags)
        KnowledgeEntry.update(**changes).where(KnowledgeEntry.id == e.id).execute()
        audit.record(f"staff:{staff_no}", f"knowledge.{'publish' if approve else 'reject'}", f"knowledge:{e.id}",
                     version=v.version, note=note)
        return e.id
    return view(attempt())


def versions(entry_id):
    _entry(entry_id)
    rows = KnowledgeVersion.select().where(KnowledgeVersion.entry == entry_id).order_by(KnowledgeVersion.version)
    return {"items": [version_view(v) for v in rows]}


def version(entry_id, number):
    return version_view(_version(entry_id, number))


# --- search ----------------------------------------------------------------------------------------

def _signature():
    row = (KnowledgeEntry.select(pw.fn.COUNT(KnowledgeEntry.id), pw.fn.MAX(KnowledgeEntry.updated_at),
                                 pw.fn.SUM(KnowledgeEntry.published_version))
           .where(KnowledgeEntry.published_version.is_null(False)).tuples().first())
    return tuple(str(x) for x in row)


def _load():
    rows = (KnowledgeVersion.select(KnowledgeVersion)
            .join(KnowledgeEntry, on=((KnowledgeEntry.id == KnowledgeVersion.entry)
                                      & (KnowledgeEntry.published_version == KnowledgeVersion.version))))
    return [fts.document(v.entry, v.version, v.title, v.category, _tags(v.tags), v.body, json.loads(v.questions))
            for v in rows]


def index():
    """The BM25 index of the published knowledge (rebuilt when something is published)."""
    return fts.current_index(_signature(), _load)


def search(text, limit=10, category=None, tag=None):
    """Published entries ranked by BM25 for ``text`` (Chinese is tokenised with jieba)."""
    hits = index().search(text, limit=limit, category=category, tag=tag)
    return [{"id": d.entry_id, "version": d.version, "title": d.title, "category": d.category, "tags": d.tags,
             "body": d.body, "score": round(s, 4), "coverage": round(c, 4), "matched": m} for d, s, c, m in hits]


def known_share(text):
    """The share of the text's character bigrams the published knowledge contains (a bot confidence feature)."""
    return round(index().known_share(text), 4)


def last_user_text(conversation_id):
    """The text of the last message the user wrote in a conversation (None without one)."""
    from app.models.service import ServiceConversation, ServiceEvent
    if ServiceConversation.get_or_none(ServiceConversation.id == conversation_id) is None:
        raise not_found("conversation", conversation_id)
    rows = (ServiceEvent.select(ServiceEvent.body)
            .where((ServiceEvent.conversation == conversation_id) & (ServiceEvent.sender == "user")
                   & (ServiceEvent.kind == "message"))
            .order_by(ServiceEvent.seq.desc()).limit(20))
    for row in rows:
        body = json.loads(row.body)
        text = body.get("text") or body.get("caption") or body.get("order_title")
        if text:
            return text
    return None


def suggest(conversation_id, limit=5):
    """Entries for the agent from the conversation's last user message."""
    text = last_user_text(conversation_id)
    return {"conversation_id": conversation_id, "query": text, "items": search(text, limit=limit) if text else []}


def use(entry_id, used_by, conversation_id=None, with_view=True):
    """Count a use of the published version (an agent sent it, or the bot answered with it)."""
    @transactional()
    def attempt():
        e = _entry(entry_id)
        if not e.published_version:
            raise Problem(409, "not-published", "Not published", "only a published entry can be used")
        KnowledgeUse.create(entry=e.id, version=e.published_version, used_by=used_by,
                            conversation_id=conversation_id)
        KnowledgeEntry.update(usage_count=KnowledgeEntry.usage_count + 1).where(
            KnowledgeEntry.id == e.id).execute()
    attempt()
    return view(entry_id) if with_view else None
