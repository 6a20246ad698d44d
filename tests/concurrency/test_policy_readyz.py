"""/readyz reports the policy version really in force, even right after concurrent applies."""
from concurrent.futures import ThreadPoolExecutor

from app import policy
from tests.conftest import Http


def test_readyz_policy_version_is_never_stale_after_concurrent_applies(app, http, server, db_conn):
    from app.policy import store
    files = policy.read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    name = sorted(files)[0]
    try:
        for rnd in range(4):
            variants = [dict(files, **{name: files[name] + f"\n# round {rnd} variant {i}\n"}) for i in range(4)]
            with ThreadPoolExecutor(max_workers=4) as pool:
                codes = list(pool.map(lambda fs: http.post("/v1/policies/apply", json={"files": fs}).status_code,
                                      variants))
            assert codes == [200] * 4, codes
            stored, _ = store.current()
            ready = Http(server).get("/readyz").json()
            assert ready["checks"]["policy_version"] == stored, (rnd, ready, stored)
            assert policy.active().version == stored
    finally:
        assert http.post("/v1/policies/apply", json={"files": files}).status_code == 200
