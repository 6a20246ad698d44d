/* Patron web workspace: htmx settings, live streams (SSE) and keyboard shortcuts. No external code. */
(function () {
  "use strict";
  document.addEventListener("htmx:configRequest", function () {});
  if (window.htmx) {
    // a refusal (4xx) is shown: the server retargets it to #flash; 5xx too, with a generic message
    htmx.config.responseHandling = [
      {code: "204", swap: false},
      {code: "[23]..", swap: true},
      {code: "[45]..", swap: true, error: false}
    ];
  }
  document.addEventListener("htmx:sendError", function () {
    var f = document.getElementById("flash");
    if (f) f.innerHTML = '<div class="flash flash-error"><strong>网络错误</strong>：请求未送达服务器，请重试。</div>';
  });

  function esc(s) { var d = document.createElement("div"); d.textContent = s == null ? "" : String(s); return d.innerHTML; }
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function localTime(iso, tz) {
    try {
      return new Date(iso).toLocaleTimeString("zh-CN", {timeZone: tz || "Asia/Shanghai", hour12: false});
    } catch (e) { return iso; }
  }
  var SENDER = {user: "用户", agent: "客服", bot: "机器人", system: "系统"};

  function eventText(ev) {
    var b = ev.body || {};
    if (ev.kind === "csat") return "用户评分：" + b.score + " 分" + (b.comment ? "（" + b.comment + "）" : "");
    if (b.type === "image") return "[图片] " + (b.url || "");
    if (b.type === "order") return "[订单] " + (b.order_no || "");
    return b.text || b.note || ev.kind;
  }

  /* Append one conversation event to a message list (deduplicated by seq). */
  function appendEvent(list, ev, mine) {
    if (!list || list.querySelector('[data-seq="' + ev.conversation_id + "-" + ev.seq + '"]')) return;
    var li = document.createElement("li");
    li.dataset.seq = ev.conversation_id + "-" + ev.seq;
    li.dataset.kind = ev.kind;
    var sender = ev.kind === "message" || ev.kind === "csat" ? ev.sender : "system";
    li.className = "from-" + sender + (sender === mine ? " mine" : "");
    li.innerHTML = '<span class="meta">' + esc(SENDER[sender] || sender) + " · " +
      esc(localTime(ev.at, document.body.dataset.tz)) + "</span>" + esc(eventText(ev));
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }
  window.patronAppendEvent = appendEvent;

  /* A live stream: EventSource with the browser's own reconnect (Last-Event-ID resumes it). */
  function live(url, onEvent) {
    var es = new EventSource(url, {withCredentials: true});
    ["message", "queued", "assigned", "closed", "requeued", "user_left", "handover", "transferred", "ticket",
     "csat", "agent_left", "timeout", "offered", "released", "notice"].forEach(function (k) {
      es.addEventListener(k, function (e) { try { onEvent(JSON.parse(e.data)); } catch (err) {} });
    });
    es.onopen = function () { document.body.dataset.live = "open"; };
    es.onerror = function () { document.body.dataset.live = "reconnecting"; };
    return es;
  }
  window.patronLive = live;

  /* Keyboard shortcuts: elements with data-shortcut="alt+k" are clicked or focused. */
  document.addEventListener("keydown", function (e) {
    if (!e.altKey) return;
    var key = "alt+" + e.key.toLowerCase();
    var el = document.querySelector('[data-shortcut="' + key + '"]');
    if (!el) return;
    e.preventDefault();
    if (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") el.focus();
    else if (el.tagName === "DETAILS") { el.open = true; var f = el.querySelector("input,textarea,select"); if (f) f.focus(); }
    else el.click();
  });
})();
