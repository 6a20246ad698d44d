"""Cross-cutting mechanisms, one copy each: idempotency, clock, calendar, SQL builders, outbox, audit, auth."""
