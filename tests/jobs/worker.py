"""`patron worker` for the job tests: the same command, accepting this suite's job module as well."""
import sys

import jobs
from app.cli import main
from tests.jobs.conftest import TEST_JOB_MODULES

if __name__ == "__main__":
    jobs.EXTRA_MODULES = TEST_JOB_MODULES
    sys.exit(main(sys.argv[1:]))
