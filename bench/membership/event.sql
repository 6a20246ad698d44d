-- pgbench reference: the core SQL shape of one POST /v1/member-events (sign-in for a member):
-- create-or-lock the member row, replay check, cap counter lock + update, growth entry, member
-- snapshot update, the stored event. (The API additionally evaluates the rulesets, writes the decision
-- log and books the points lot through the ledger; this is the floor of the storage work alone.)
\set m random(1, :nmem)
\set k random(1, 4611686018427387903)
BEGIN;
INSERT INTO member (member_ref, joined_at, growth, level, level_since, updated_at)
VALUES ('pgb-' || :m, now(), 0, '注册', now(), now()) ON CONFLICT DO NOTHING;
SELECT id, growth FROM member WHERE member_ref = 'pgb-' || :m FOR UPDATE \gset
SELECT 1 FROM member_event WHERE event_id = 'pg-' || :client_id || '-' || :k;
INSERT INTO cap_counter (scope, cap, "window", amount, count) VALUES ('pgb-' || :m, 'growth:bench', '2026-11-26', 0, 0)
ON CONFLICT DO NOTHING;
SELECT id AS cid FROM cap_counter WHERE scope = 'pgb-' || :m AND cap = 'growth:bench' AND "window" = '2026-11-26' FOR UPDATE \gset
UPDATE cap_counter SET amount = amount + 1, count = count + 1 WHERE id = :cid;
INSERT INTO growth_entry (member_ref, entry_key, kind, delta, balance_after, cut, event_id, rule, policy_version, reason, at, created_at)
VALUES ('pgb-' || :m, 'g:pg-' || :client_id || '-' || :k, 'earn', 1, :growth + 1, 0, 'pg-' || :client_id || '-' || :k,
        'bench', 'pgbench', 'bench', now(), now());
UPDATE member SET growth = growth + 1, updated_at = now() WHERE id = :id;
INSERT INTO member_event (event_id, member_ref, type, occurred_at, body, digest, paid_at_event, policy_version, result, received_at)
VALUES ('pg-' || :client_id || '-' || :k, 'pgb-' || :m, 'sign_in', now(), '{}', md5(:k::text), false, 'pgbench', '{}', now());
COMMIT;
