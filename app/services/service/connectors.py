"""Connectors to the surrounding shop: orders, products, promotions, users — and actions on orders.

``connector()`` is the built-in demo store (the embedded default) or an HTTP connector (``SHOP_URL``):
every call has a timeout, failed calls are retried with exponential back-off, and a circuit breaker
per base URL stops calling a shop that keeps failing: after ``SHOP_BREAKER_FAILURES`` failed attempts in
a row it opens (calls are refused at once, without reaching the shop) for ``SHOP_BREAKER_COOLDOWN_SECONDS``,
then half-opens (one trial call; the others are still refused): the trial's success closes it, its failure
opens it again. Lookups are cached for ``SHOP_CACHE_SECONDS``; actions are never cached and carry an
``Idempotency-Key`` so a retried call has exactly one effect. Both clocks read the platform clock.
"""
import datetime as dt
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from app.errors import Problem
from app.platform import clock, timefmt

BACKOFF_BASE = 0.2        # seconds before the first retry (doubles each time)


class ConnectorError(Problem):
    def __init__(self, detail, **extra):
        super().__init__(502, "connector-failed", "Shop connector failed", detail, **extra)


class ConnectorUnavailable(Problem):
    def __init__(self, detail, **extra):
        super().__init__(503, "connector-unavailable", "Shop connector unavailable", detail, **extra)


class DemoStore:
    """Built-in demo shop: a few orders per user, computed from the clock (the embedded default)."""

    name = "demo"

    def __init__(self):
        self._effects = {}
        self._lock = threading.Lock()

    def _orders(self, user_id):
        now = clock.now().replace(microsecond=0)
        seed = sum(map(ord, user_id)) % 7
        out = []
        for i, (days, status, amount, title) in enumerate([(2, "paid", 12900, "纯棉T恤 白色 L"),
                                                            (9, "delivered", 45900, "蓝牙耳机"),
                                                            (40, "delivered", 8800, "保温杯 500ml"),
                                                            (200, "delivered", 129900, "扫地机器人")]):
            no = f"D{seed}{i}-{user_id}"[:64]
            out.append({"order_no": no, "user_id": user_id, "status": status, "amount_fen": amount + seed * 100,
                        "title": title, "created_at": timefmt.iso(now - dt.timedelta(days=days)),
                        "invoiced": False})
        return out

    def get_order(self, order_no):
        user_id = order_no.split("-", 1)[1] if "-" in order_no else None
        for o in self._orders(user_id) if user_id else []:
            if o["order_no"] == order_no:
                return o
        raise Problem(404, "order-not-found", "Order not found", f"no order {order_no!r} in the shop")

    def list_orders(self, user_id, limit=10):
        return self._orders(user_id)[:limit]

    def get_product(self, sku):
        return {"sku": sku, "title": f"商品 {sku}", "price_fen": 9900, "stock": 12}

    def promotions(self):
        return [{"code": "MJ300-50", "title": "满300减50", "ends_at": timefmt.iso(clock.now() + dt.timedelta(days=7))}]

    def get_user(self, user_id):
        return {"user_id": user_id, "nickname": f"用户{user_id[-4:]}", "phone_masked": "138****0000"}

    def perform(self, action, order_no, params, key):
        with self._lock:
            if key not in self._effects:
                self._effects[key] = {"ok": True, "action": action, "order_no": order_no,
                                      "ref": f"DEMO-{action.upper()}-{len(self._effects) + 1}", "params": params}
            return self._effects[key]


class _Breaker:
    """closed -> (``failures`` failed attempts in a row) open -> (``cooldown`` seconds) half_open -> one trial:
    success closes, failure opens again. Times come from the platform clock."""

    def __init__(self):
        self.failures, self.opened_at, self.trial = 0, None, False
        self.lock = threading.Lock()

    def state(self, cooldown):
        if self.opened_at is None:
            return "closed"
        if (clock.now() - self.opened_at).total_seconds() < cooldown:
            return "open"
        return "half_open"

    def enter(self, base, cooldown):
        """Admit a call (the half-open trial included), or refuse it at once while open or during a trial."""
        with self.lock:
            state = self.state(cooldown)
            if state == "closed":
                return
            if state == "half_open" and not self.trial:
                self.trial = True
                return
            left = cooldown - (clock.now() - self.opened_at).total_seconds()
            raise ConnectorUnavailable(
                f"the shop at {base} failed {self.failures} times in a row; "
                + (f"calls resume in {max(left, 0):.0f} s" if state == "open" else "a trial call is under way"),
                circuit=state)

    def record(self, ok, limit):
        """The outcome of one attempt; True when the breaker is (now) open."""
        with self.lock:
            was_trial, self.trial = self.trial, False
            if ok:
                self.failures, self.opened_at = 0, None
                return False
            self.failures += 1
            if was_trial or self.failures >= limit:
                self.opened_at = clock.now()
            return self.opened_at is not None


_breakers = {}
_breakers_lock = threading.Lock()


class HttpConnector:
    """The shop over HTTP (JSON): GET /orders/{no}, GET /users/{id}/orders, GET /products/{sku},
    GET /promotions, GET /users/{id}, POST /orders/{no}/{action} (with Idempotency-Key)."""

    name = "http"

    def __init__(self, base_url, auth_header="Authorization", token=None, timeout=3.0, retries=2,
                 breaker_failures=5, breaker_cooldown=30.0):
        self.base = base_url.rstrip("/")
        self.auth_header, self.token, self.timeout, self.retries = auth_header, token, float(timeout), int(retries)
        self.breaker_failures, self.breaker_cooldown = int(breaker_failures), float(breaker_cooldown)
        with _breakers_lock:
            self.breaker = _breakers.setdefault(self.base, _Breaker())

    def _call(self, method, path, body=None, key=None):
        self.breaker.enter(self.base, self.breaker_cooldown)
        headers = {"Accept": "application/json"}
        if self.token:
            headers[self.auth_header] = self.token
        if key:
            headers["Idempotency-Key"] = key
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_BASE * (2 ** (attempt - 1)))
            req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    out = json.loads(resp.read() or b"null")
                self.breaker.record(True, self.breaker_failures)
                return out
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    self.breaker.record(True, self.breaker_failures)
                    raise Problem(404, "not-found-in-shop", "Not found in the shop", f"{method} {path}: 404") from None
                if exc.code < 500 and exc.code != 429:
                    self.breaker.record(True, self.breaker_failures)
                    raise ConnectorError(f"{method} {path}: the shop answered {exc.code}", shop_status=exc.code) from None
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if self.breaker.record(False, self.breaker_failures):
                attempt += 1
                break  # open now: no more attempts against a shop that keeps failing
        else:
            attempt = self.retries + 1
        raise ConnectorUnavailable(f"{method} {path}: no answer after {attempt} attempt(s) ({last})",
                                   attempts=attempt)

    def get_order(self, order_no):
        return self._call("GET", f"/orders/{urllib.parse.quote(order_no, safe='')}")

    def list_orders(self, user_id, limit=10):
        return self._call("GET", f"/users/{urllib.parse.quote(user_id, safe='')}/orders?limit={int(limit)}")

    def get_product(self, sku):
        return self._call("GET", f"/products/{urllib.parse.quote(sku, safe='')}")

    def promotions(self):
        return self._call("GET", "/promotions")

    def get_user(self, user_id):
        return self._call("GET", f"/users/{urllib.parse.quote(user_id, safe='')}")

    def perform(self, action, order_no, params, key):
        return self._call("POST", f"/orders/{urllib.parse.quote(order_no, safe='')}/{action}", params, key=key)


_demo = DemoStore()
_cache = {}
_cache_lock = threading.Lock()


def connector():
    """The configured connector (the demo store unless ``SHOP_URL`` is set)."""
    from flask import current_app
    cfg = current_app.config
    if not cfg.get("SHOP_URL"):
        return _demo
    return HttpConnector(cfg["SHOP_URL"], cfg.get("SHOP_AUTH_HEADER") or "Authorization", cfg.get("SHOP_AUTH_TOKEN"),
                         cfg.get("SHOP_TIMEOUT_SECONDS", 3), cfg.get("SHOP_RETRIES", 2),
                         cfg.get("SHOP_BREAKER_FAILURES", 5), cfg.get("SHOP_BREAKER_COOLDOWN_SECONDS", 30))


def lookup(kind, *args):
    """A cached lookup (``get_order``, ``list_orders``, ``get_product``, ``promotions``, ``get_user``)."""
    from flask import current_app
    conn = connector()
    ttl = dt.timedelta(seconds=float(current_app.config.get("SHOP_CACHE_SECONDS", 30)))
    key = (conn.name, getattr(conn, "base", None), kind, args)
    now = clock.now()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
    value = getattr(conn, kind)(*args)
    with _cache_lock:
        if len(_cache) > 5000:
            _cache.clear()
        _cache[key] = (clock.now() + ttl, value)
    return value


def forget(kind, *args):
    """Drop a cached lookup (after an action changed it)."""
    with _cache_lock:
        for k in [k for k in _cache if k[2] == kind and k[3] == args]:
            _cache.pop(k, None)
