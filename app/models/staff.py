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
