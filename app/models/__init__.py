"""Peewee models, one module per bounded context."""
