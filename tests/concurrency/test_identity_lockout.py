"""Failed sign-ins racing each other are all counted: parallel guessing does not dodge the lockout."""
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import Http, create_staff, set_staff_password


def test_parallel_failed_sign_ins_are_each_counted(server, admin_token, db_conn):
    from app.models.staff import StaffCredential
    staff_no = create_staff(Http(server, admin_token), "cs", ["agent_l1"])
    set_staff_password(staff_no)

    def attempt(i):
        return requests.post(server + "/v1/auth/login", json={"staff_no": staff_no, "password": f"Wrong-pass-{i}"},
                             timeout=60).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(attempt, range(4)))
    assert codes == [401] * 4
    assert StaffCredential.get(StaffCredential.staff_no == staff_no).failed_count == 4
