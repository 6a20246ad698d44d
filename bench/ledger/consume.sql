-- pgbench reference: the SQL shape of one POST /v1/ledger/consume (cash available -> a platform shard),
-- statement for statement as the request issues it (app.platform.auth, app.services.ledger.core,
-- app.platform.audit + app.platform.idempotency). Variables set by bench.py with -D:
--   ncust (customers bench-1..ncust), sysacct/syscust/sysbase (platform_revenue CNY account, its
--   customer row and first shard row id; the 16 shard rows have consecutive ids), amount, keyid (the
--   bench's API key id, quoted).
\set c random(1, :ncust)
\set shard random(0, 15)
\set k random(1, 4611686018427387903)
-- 1. the API key, read per request (app.platform.auth: no cache, a revoked key is refused at once)
SELECT name, secret_hash, scopes, revoked_at FROM api_key WHERE key_id = :keyid LIMIT 1;
-- (no idempotency lookup first: app.platform.idempotency is optimistic outside a transaction)
-- 2. BEGIN travels with the first statement (app.db._Pool), which locks the customer's sub-account rows in
--    id order (resolving the account by reference on the way) and takes a platform shard no other
--    transaction holds (SKIP LOCKED: never wait for a shard), preferring the last one
--    (app.services.ledger.core.lock_accounts(shard_of=...))
--    When every shard is held (16 clients, 16 shards) it falls back to the preferred one and waits for it in
--    the UPDATE, as Patron waits when no shard is free (app.services.ledger.core._lock_free_shard).
BEGIN \;
WITH s AS (SELECT id FROM ledger_balance WHERE id IN (:sysbase, :sysbase + 1, :sysbase + 2, :sysbase + 3,
        :sysbase + 4, :sysbase + 5, :sysbase + 6, :sysbase + 7, :sysbase + 8, :sysbase + 9, :sysbase + 10, :sysbase + 11,
        :sysbase + 12, :sysbase + 13, :sysbase + 14, :sysbase + 15)
      ORDER BY id = :sysbase + :shard DESC, random() LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
SELECT max(x.id) FILTER (WHERE x.sub = 'available') AS avail, max(x.account_id) AS acct, max(x.customer_id) AS cust,
       max(x.balance_minor) FILTER (WHERE x.sub = 'available') AS bal, max(x.shard_id) AS shard_id
FROM (SELECT b.id, b.sub, b.balance_minor, a.id AS account_id, a.customer_id, c.external_ref, a.type, a.label,
             a.asset, a.debit_blocked, a.credit_blocked, COALESCE((SELECT id FROM s), :sysbase + :shard) AS shard_id
      FROM ledger_balance b JOIN ledger_account a ON a.id = b.account_id JOIN ledger_customer c ON c.id = a.customer_id
      WHERE c.external_ref = 'bench-' || :c AND a.type = 'cash' AND a.label = 'default'
      ORDER BY b.id FOR UPDATE OF b) x \gset
-- 3. journal + both snapshot rows + both entries (with balance_after) + the consume's refund counter row
--    in one statement, as ledger.core._post_one_statement does on PostgreSQL
WITH j AS (INSERT INTO ledger_journal (type, client, idempotency_key, external_ref, request_digest, policy_version, rule, actor, metadata, created_at)
           VALUES ('consume', 'pgbench', 'pg-' || :client_id || '-' || :k, NULL, md5(:k::text) || md5(:c::text), 'pgbench',
                   'consume: cashback > available > overdraft (limit 5000)', 'api_key:pgbench', NULL, now()) RETURNING id),
     u AS (UPDATE ledger_balance SET balance_minor = balance_minor + (CASE id WHEN :avail THEN -:amount::bigint WHEN :shard_id THEN :amount::bigint ELSE 0 END)
           WHERE id IN (:avail, :shard_id) RETURNING id, balance_minor),
     e AS (INSERT INTO ledger_entry (journal_id, balance_id, account_id, customer_id, sub, asset, amount_minor, balance_after_minor, created_at)
           SELECT j.id, u.id, v.aid, v.cid, v.sub, v.asset, v.amount, u.balance_minor, now()
           FROM j CROSS JOIN u JOIN (VALUES (:avail::bigint, :acct::bigint, :cust::bigint, 'available', 'CNY', -:amount::bigint),
                                            (:shard_id::bigint, :sysacct::bigint, :syscust::bigint, 'main', 'CNY', :amount::bigint))
                AS v(bid, aid, cid, sub, asset, amount) ON v.bid = u.id),
     x AS (INSERT INTO ledger_consume (journal_id, account_id, payee_id, amount_minor, cashback_minor, available_minor, overdraft_minor,
                                       refunded_cashback_minor, refunded_available_minor, refunded_overdraft_minor)
           SELECT j.id, :acct, :sysacct, :amount, 0, :amount, 0, 0, 0, 0 FROM j)
SELECT j.id, u.id, u.balance_minor FROM j CROSS JOIN u;
-- 4. the request's audit row and the idempotency record (a response of about the size the API stores) in one
--    statement, as app.platform.sql.deferred writes them (app.platform.idempotency.run, audit.request_row),
--    sent with the COMMIT (app.db._Pool.execute_later)
WITH w0 AS (INSERT INTO audit_log ("at", actor, action, subject, detail, request_id, staff_no, credential, policy_version,
                                   "before", "after")
            VALUES (now(), 'api_key:pgbench', 'ledger.consume', NULL, '{"status":201}', md5(:k::text), NULL,
                    'api_key:pgbench', 'pgbench', NULL, '{"operation":"consume","journal":{"id":1}}'))
INSERT INTO idempotency_record (client, "key", operation, request_digest, status_code, response, created_at)
VALUES ('pgbench', 'pg-' || :client_id || '-' || :k, 'ledger.consume', md5(:k::text) || md5(:c::text), 201,
        repeat('x', 740), now()) \;
COMMIT;
