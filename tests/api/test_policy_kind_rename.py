"""The ledger's policy kind was called ``assets``: a database holding a version stored under that name upgrades."""
from app import policy
from app.db import db
from tests.ledger_factories import ref


def test_a_stored_assets_version_is_read_as_the_ledger_kind_after_a_restart(app, http):
    with app.app_context(), db.connection_context():
        original = dict(policy.active().files)
    key = next(k for k in original if k.endswith("policies/ledger.yaml"))
    old = {k: v for k, v in original.items() if k != key}
    old[key.replace("ledger.yaml", "assets.yaml")] = original[key].replace("kind: ledger", "kind: assets")
    assert "kind: assets" in old["policies/assets.yaml"]
    try:
        with app.app_context(), db.connection_context():
            result = policy.apply(old, "tests", note="a set saved before the rename")
        old_version = result.version
        assert old_version == policy.PolicySet(old).version  # the content hash of the old text, unchanged
        # a new process: nothing in memory, the stored (old) version is the active one
        policy._active = None
        policy.startup(app)
        active = policy.active()
        assert active.version == old_version and active.files == dict(sorted(old.items()))
        assert active.one("ledger")["_file"] == "policies/assets.yaml"
        assert policy.check(old)[1] == []  # still a valid, complete set (it can be applied again)
        cref = ref("rename")
        assert http.post("/v1/ledger/customers", json={"external_ref": cref}).status_code == 201
        r = http.post("/v1/ledger/recharge", json={"customer": cref, "amount": 100}, key=ref("k"))
        assert r.status_code == 201, r.text
        assert r.json()["journal"]["policy_version"] == old_version
    finally:
        with app.app_context(), db.connection_context():
            policy.apply(original, "tests")
    assert policy.active_version() == policy.PolicySet(original).version
