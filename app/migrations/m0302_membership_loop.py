"""Membership: points mall, vouchers held, benefit grants, orders paid through checkout and their refunds, profiles.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "mall_stock" ("id" SERIAL NOT NULL PRIMARY KEY, "item" VARCHAR(60) NOT NULL, "sold" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "mall_stock_item" ON "mall_stock" ("item")',
    'CREATE TABLE IF NOT EXISTS "mall_redemption" ("id" SERIAL NOT NULL PRIMARY KEY, "redemption_id" VARCHAR(100) NOT NULL, "member_ref" VARCHAR(100) NOT NULL, "item" VARCHAR(60) NOT NULL, "item_type" VARCHAR(20) NOT NULL, "points" BIGINT NOT NULL, "status" VARCHAR(20) NOT NULL, "spend_journal" INTEGER, "issued" TEXT NOT NULL, "rule" VARCHAR(200) NOT NULL, "policy_version" VARCHAR(64) NOT NULL, "reason" TEXT, "at" TIMESTAMP NOT NULL, "decided_at" TIMESTAMP, "decided_by" VARCHAR(200))',
    'CREATE UNIQUE INDEX IF NOT EXISTS "mall_redemption_redemption_id" ON "mall_redemption" ("redemption_id")',
    'CREATE INDEX IF NOT EXISTS "mall_redemption_member_ref" ON "mall_redemption" ("member_ref")',
    'CREATE TABLE IF NOT EXISTS "member_voucher" ("id" SERIAL NOT NULL PRIMARY KEY, "member_ref" VARCHAR(100) NOT NULL, "kind" VARCHAR(20) NOT NULL, "asset" VARCHAR(20) NOT NULL, "lot_id" INTEGER NOT NULL, "amount_fen" BIGINT NOT NULL, "min_order_fen" BIGINT NOT NULL, "categories" TEXT, "name" VARCHAR(100) NOT NULL, "source" VARCHAR(200) NOT NULL, "source_ref" VARCHAR(200), "expires_at" TIMESTAMP, "at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "member_voucher_member_ref" ON "member_voucher" ("member_ref")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "member_voucher_lot_id" ON "member_voucher" ("lot_id")',
    'CREATE TABLE IF NOT EXISTS "benefit_grant" ("id" SERIAL NOT NULL PRIMARY KEY, "member_ref" VARCHAR(100) NOT NULL, "benefit" VARCHAR(100) NOT NULL, "source" VARCHAR(200) NOT NULL, "starts_at" TIMESTAMP NOT NULL, "ends_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "benefit_grant_member_ref" ON "benefit_grant" ("member_ref")',
    'CREATE TABLE IF NOT EXISTS "member_order" ("id" SERIAL NOT NULL PRIMARY KEY, "member_ref" VARCHAR(100) NOT NULL, "order_ref" VARCHAR(100) NOT NULL, "total_fen" BIGINT NOT NULL, "refunded_fen" BIGINT NOT NULL, "parts" TEXT NOT NULL, "quote" TEXT NOT NULL, "policy_version" VARCHAR(64) NOT NULL, "at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "member_order_member_ref" ON "member_order" ("member_ref")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "member_order_member_ref_order_ref" ON "member_order" ("member_ref", "order_ref")',
    'CREATE TABLE IF NOT EXISTS "order_refund" ("id" SERIAL NOT NULL PRIMARY KEY, "refund_id" VARCHAR(100) NOT NULL, "member_ref" VARCHAR(100) NOT NULL, "order_ref" VARCHAR(100) NOT NULL, "amount_fen" BIGINT NOT NULL, "result" TEXT NOT NULL, "policy_version" VARCHAR(64) NOT NULL, "at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "order_refund_refund_id" ON "order_refund" ("refund_id")',
    'CREATE INDEX IF NOT EXISTS "order_refund_member_ref" ON "order_refund" ("member_ref")',
    'CREATE TABLE IF NOT EXISTS "member_profile" ("id" SERIAL NOT NULL PRIMARY KEY, "member_ref" VARCHAR(100) NOT NULL, "nickname" VARCHAR(100), "phone" VARCHAR(30), "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "member_profile_member_ref" ON "member_profile" ("member_ref")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
