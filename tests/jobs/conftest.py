"""Job tests run job functions of their own (tests.jobs.test_jobs): the runner accepts them only here."""
import pytest

TEST_JOB_MODULES = ("tests.jobs.test_jobs",)


@pytest.fixture(autouse=True)
def test_job_modules(monkeypatch):
    import jobs
    monkeypatch.setattr(jobs, "EXTRA_MODULES", TEST_JOB_MODULES)
