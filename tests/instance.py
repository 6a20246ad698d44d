"""A fresh demo instance as a user gets it: `patron demo`, then `patron serve` on an ephemeral port.

Used by the tests that must see the product from outside (docs walkthroughs, schemathesis, metrics):
its own database (a temp SQLite file or a new PostgreSQL schema, per PATRON_TEST_DATABASE), the
printed demo key, and gunicorn's own "Listening at" line for the port it bound.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class DemoInstance:
    """``patron demo`` + ``patron serve --port 0`` in a subprocess; ``.base``, ``.key``, ``.env``."""

    def __init__(self, database_url, extra_env=None, workers=None):
        self.tmp = tempfile.mkdtemp(prefix="patron-demo-")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "PROMETHEUS_"))}
        self.env.update({"PATRON_DATABASE_URL": database_url, "PATRON_LOG_LEVEL": "INFO",
                         "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.env.update(extra_env or {})
        self.workers = workers
        self.proc = None
        self.base = self.key = None
        self.log_path = os.path.join(self.tmp, "server.log")

    def patron(self, *args, timeout=120):
        return subprocess.run([str(BIN / "patron"), *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self):
        demo = self.patron("demo", "--port", "0")
        assert demo.returncode == 0, demo.stderr[-3000:]
        self.key = re.search(r"(ptr_[A-Za-z0-9_-]+)", demo.stdout).group(1)
        args = [str(BIN / "patron"), "serve", "--host", "127.0.0.1", "--port", "0"]
        if self.workers:
            args += ["--workers", str(self.workers)]
        self.log = open(self.log_path, "w+", encoding="utf-8")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = Path(self.log_path).read_text(encoding="utf-8", errors="replace")
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", text)
            if found:
                self.base = found.group(1)
                break
            assert self.proc.poll() is None, f"patron serve exited:\n{text[-3000:]}"
            time.sleep(0.2)
        assert self.base, "patron serve did not start listening within 90 s"
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=30).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise AssertionError("patron serve never answered /healthz")

    def server_log(self):
        return Path(self.log_path).read_text(encoding="utf-8", errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
