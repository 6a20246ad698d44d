"""Departments and staff (roles come from the ``staff`` policy); shared by tickets and customer service."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class Department(BaseModel):
    """A department mirrored from the ``staff`` policy (the policy is the source of truth)."""
    code = pw.CharField(max_length=64, unique=True)
    name = pw.CharField(max_length=200)
    queues = pw.TextField(default="")  # space separated queue codes
    active = pw.BooleanField(default=True)
    updated_at = pw.DateTimeField(default=clock.now)


class Staff(BaseModel):
    """A person who works tickets/conversations; ``roles`` are role codes from the ``staff`` policy."""
    staff_no = pw.CharField(max_length=64, unique=True)
    name = pw.CharField(max_length=200)
    department = pw.CharField(max_length=64, index=True)
    roles = pw.TextField()  # space separated, padded with spaces (" a b ") so LIKE '% a %' matches exactly
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=clock.now)

    @property
    def role_list(self):
        return self.roles.split()


class StaffCredential(BaseModel):
    """A staff member's sign-in secret: a memory-hard password hash, lockout state, optional TOTP."""
    staff_no = pw.CharField(max_length=64, unique=True)
    password_hash = pw.TextField()
    password_changed_at = pw.DateTimeField(default=clock.now)
    must_change = pw.BooleanField(default=False)  # set by an admin reset: only a password change is allowed
    failed_count = pw.IntegerField(default=0)  # consecutive failed sign-ins since the last lock or success
    lockouts = pw.IntegerField(default=0)  # consecutive lockouts: each doubles the next lock
    locked_until = pw.DateTimeField(null=True)
    totp_secret = pw.CharField(max_length=64, null=True)  # base32; enabled once confirmed with a code
    totp_enabled = pw.BooleanField(default=False)
    totp_last_step = pw.BigIntegerField(null=True)  # a code is accepted once (replay)
    updated_at = pw.DateTimeField(default=clock.now)


class StaffSession(BaseModel):
    """A signed-in session: an opaque token ``pts_<token_id>_<secret>``, stored as a hash of the secret."""
    token_id = pw.CharField(max_length=32, unique=True)
    secret_hash = pw.CharField(max_length=64)
    csrf_hash = pw.CharField(max_length=64, null=True)  # cookie sessions: hash of the double-submit token
    staff_no = pw.CharField(max_length=64, index=True)
    transport = pw.CharField(max_length=16, default="bearer")  # bearer | cookie
    mfa = pw.BooleanField(default=False)  # signed in with a TOTP code
    created_at = pw.DateTimeField(default=clock.now)
    expires_at = pw.DateTimeField()
    revoked_at = pw.DateTimeField(null=True)
    revoked_reason = pw.CharField(max_length=64, null=True)
