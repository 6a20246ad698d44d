"""Knowledge base (话术 and process guides): entries, their versions (reviewed before publish), usage."""
import peewee as pw

from app.db import BaseModel
from app.platform import clock


class KnowledgeEntry(BaseModel):
    """One answer or process guide; ``published_version`` is what search and the bot serve."""
    title = pw.CharField(max_length=200)
    category = pw.CharField(max_length=64, index=True)
    tags = pw.TextField(default="")  # " 发票 退款 " (padded, like Staff.roles)
    state = pw.CharField(max_length=16)  # state of the latest version: draft | in_review | published | rejected
    version = pw.IntegerField(default=1)  # the latest version number
    published_version = pw.IntegerField(null=True)
    usage_count = pw.IntegerField(default=0)
    created_by = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=clock.now)
    updated_at = pw.DateTimeField(default=clock.now)


class KnowledgeVersion(BaseModel):
    """A version of an entry: who wrote it and when, who reviewed it; never changed after review."""
    entry = pw.BigIntegerField()
    version = pw.IntegerField()
    title = pw.CharField(max_length=200)
    body = pw.TextField()
    questions = pw.TextField(default="[]")  # JSON list of the ways users ask this (search and bot)
    category = pw.CharField(max_length=64)
    tags = pw.TextField(default="")
    state = pw.CharField(max_length=16)  # draft | in_review | published | rejected | superseded
    author = pw.CharField(max_length=64)
    note = pw.TextField(default="")
    restored_from = pw.IntegerField(null=True)
    reviewed_by = pw.CharField(max_length=64, null=True)
    reviewed_at = pw.DateTimeField(null=True)
    review_note = pw.TextField(null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("entry", "version"), True),)


class KnowledgeUse(BaseModel):
    """An agent (or the bot) used an entry, in a conversation or not."""
    entry = pw.BigIntegerField(index=True)
    version = pw.IntegerField()
    used_by = pw.CharField(max_length=64)
    conversation_id = pw.BigIntegerField(null=True)
    created_at = pw.DateTimeField(default=clock.now)


MODELS = [KnowledgeEntry, KnowledgeVersion, KnowledgeUse]
