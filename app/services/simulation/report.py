"""Simulation reports: baseline beside candidate with their difference, as JSON, CSV, a terminal table and a self-contained HTML page."""
import html
import json

from app.platform import charts


def build(run):
    """The report (without member states) and the per-member comparison rows from ``runner.execute`` output."""
    base, cand = dict(run["baseline"]), dict(run["candidate"])
    base_members, cand_members = base.pop("member_states", {}), cand.pop("member_states", {})
    report = {"report": "patron-simulation/1", "inputs": run["inputs"], "baseline": base, "candidate": cand,
              "diff": diff(base, cand)}
    rows = []
    for ref in sorted(set(base_members) | set(cand_members)):
        b = base_members.get(ref, {})
        c = cand_members.get(ref, {})
        rows.append({"member_id": ref, "baseline_level": b.get("level"), "candidate_level": c.get("level"),
                     "baseline_growth": b.get("growth", 0), "candidate_growth": c.get("growth", 0),
                     "baseline_points": b.get("points", 0), "candidate_points": c.get("points", 0)})
    return report, rows


def diff(a, b):
    """candidate - baseline for every number (dicts by key, a missing side counts as 0; text is left out)."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}
        out = {}
        for k in sorted(set(a) | set(b), key=str):
            if k in ("policy_version", "order", "point_value_fen"):
                continue
            d = diff(a.get(k), b.get(k))
            if d is not None:
                out[k] = d
        return out
    if isinstance(a, list) or isinstance(b, list):
        a, b = a or [], b or []
        out = []
        for x, y in zip(a, b):
            d = diff(x, y)
            if isinstance(x, dict) and "month" in x:
                d = dict(d or {}, month=x["month"])
            out.append(d)
        return out
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        return (b or 0) - (a or 0)
    return None


def is_zero(d):
    """True when a diff holds only zeros."""
    if isinstance(d, dict):
        return all(is_zero(v) for k, v in d.items() if k != "month")
    if isinstance(d, list):
        return all(is_zero(v) for v in d)
    return not d


def to_json(report):
    """Canonical JSON: the same inputs give the same bytes."""
    return json.dumps(report, ensure_ascii=False, sort_keys=True, indent=2) + "\n"


def _flat(prefix, value, out):
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            _flat(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            key = v.get("month") if isinstance(v, dict) and "month" in v else str(i)
            _flat(f"{prefix}.{key}", {k: x for k, x in v.items() if k != "month"} if isinstance(v, dict) else v,
                  out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


def metric_rows(report):
    """(metric, baseline, candidate, diff) for every number of the report."""
    b, c = {}, {}
    _flat("", report["baseline"], b)
    _flat("", report["candidate"], c)
    rows = []
    for key in sorted(set(b) | set(c)):
        if key.endswith("point_value_fen") or key == "events_replayed":
            continue
        rows.append((key, b.get(key, 0), c.get(key, 0), c.get(key, 0) - b.get(key, 0)))
    return rows


def to_csv(report):
    from app.platform.export import csv_text
    return csv_text(["metric", "baseline", "candidate", "diff"], metric_rows(report))


def members_csv(rows):
    from app.platform.export import csv_text
    fields = ["member_id", "baseline_level", "candidate_level", "baseline_growth", "candidate_growth",
              "baseline_points", "candidate_points"]
    return csv_text(fields, ([r.get(f) for f in fields] for r in rows))


SUMMARY = [("members", "members"), ("levels.promotions", "promotions"), ("levels.demotions", "demotions"),
           ("growth.earned", "growth earned"), ("growth.clawed_back", "growth clawed back"),
           ("growth.deducted", "growth deducted"), ("growth.cut_by_caps", "growth cut by caps"),
           ("points.issued", "points issued"), ("points.redeemed", "points redeemed"),
           ("points.expired", "points expired"), ("points.clawed_back", "points clawed back"),
           ("points.cut_by_caps", "points cut by caps"), ("points.outstanding", "points outstanding"),
           ("points.liability_fen", "points liability (fen)"), ("benefits.total_fen", "benefit cost (fen)"),
           ("benefits.discounts_fen", "  discounts (fen)"), ("benefits.cashback_fen", "  cashback (fen)"),
           ("benefits.coupons_fen", "  coupons (fen)"), ("plans.subscribed", "plans subscribed"),
           ("plans.renewed", "plans renewed"), ("plans.lapsed", "plans lapsed"),
           ("tickets.created", "tickets replayed")]


def _get(d, path):
    for part in path.split("."):
        d = (d or {}).get(part) if isinstance(d, dict) else None
    return d or 0


def to_text(report):
    """The terminal table: summary figures, level distribution, caps, ticket routing."""
    b, c = report["baseline"], report["candidate"]
    lines = [f"simulation {report['inputs']['from']} .. {report['inputs']['to']}  "
             f"records {report['inputs']['records']}  baseline {b.get('policy_version')}  "
             f"candidate {c.get('policy_version')}", ""]
    w = max(len(label) for _, label in SUMMARY) + 2
    lines.append(f"{'':<{w}}{'baseline':>14}{'candidate':>14}{'diff':>14}")
    for path, label in SUMMARY:
        x, y = _get(b, path), _get(c, path)
        lines.append(f"{label:<{w}}{x:>14,}{y:>14,}{y - x:>+14,}")
    lines += ["", "level at end"]
    for lv in c["levels"]["order"]:
        x, y = b["levels"]["end"].get(lv, 0), c["levels"]["end"].get(lv, 0)
        lines.append(f"  {lv:<{w - 2}}{x:>14,}{y:>14,}{y - x:>+14,}")
    caps = sorted(set(b["caps"]) | set(c["caps"]))
    if caps:
        lines += ["", "cap hits (members / amount cut)"]
        for cap in caps:
            x, y = b["caps"].get(cap, {}), c["caps"].get(cap, {})
            lines.append(f"  {cap:<{w + 6}}{x.get('members', 0):>8,} / {x.get('amount_cut', 0):<10,}"
                         f"{y.get('members', 0):>8,} / {y.get('amount_cut', 0):<10,}")
    if c["tickets"]["created"] or b["tickets"]["created"]:
        lines += ["", "tickets by department / priority (baseline -> candidate)"]
        depts = sorted(set(b["tickets"]["routing"]) | set(c["tickets"]["routing"]))
        for dept in depts:
            for prio in sorted(set(b["tickets"]["routing"].get(dept, {})) | set(c["tickets"]["routing"].get(dept, {}))):
                x = b["tickets"]["routing"].get(dept, {}).get(prio, 0)
                y = c["tickets"]["routing"].get(dept, {}).get(prio, 0)
                lines.append(f"  {dept + ' ' + prio:<{w - 2}}{x:>14,}{y:>14,}{y - x:>+14,}")
        for prio in sorted(set(b["tickets"]["sla"]) | set(c["tickets"]["sla"])):
            for metric in ("first_response", "resolution"):
                x = b["tickets"]["sla"].get(prio, {}).get(metric, {}).get("breached", 0)
                y = c["tickets"]["sla"].get(prio, {}).get(metric, {}).get("breached", 0)
                lines.append(f"  {'breach ' + prio + ' ' + metric:<{w - 2}}{x:>14,}{y:>14,}{y - x:>+14,}")
    return "\n".join(lines) + "\n"


# ---- HTML (inline SVG, no scripts, no network) ---------------------------------------------------

def to_html(report):
    """A self-contained page: tables and inline SVG charts; no script, stylesheet or font is fetched."""
    b, c = report["baseline"], report["candidate"]
    order = c["levels"]["order"]
    esc = html.escape
    parts = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Patron simulation</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:960px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th:first-child,"
             "td:first-child{text-align:left}.neg{color:#b00}.pos{color:#070}</style></head><body>",
             f"<h1>Simulation {esc(report['inputs']['from'])} .. {esc(report['inputs']['to'])}</h1>",
             f"<p>{report['inputs']['records']} records; baseline policy {esc(str(b.get('policy_version')))}, "
             f"candidate {esc(str(c.get('policy_version')))}; input sha256 {esc(report['inputs']['events_sha256'])}</p>",
             charts.bars("Level distribution at end", order,
                   [("baseline", [b["levels"]["end"].get(lv, 0) for lv in order]),
                    ("candidate", [c["levels"]["end"].get(lv, 0) for lv in order])])]
    months = [m["month"] for m in c["levels"]["monthly"]]
    if months:
        series = []
        for lv in order:
            series.append((f"baseline {lv}", [m["levels"].get(lv, 0) for m in b["levels"]["monthly"]]))
            series.append((f"candidate {lv}", [m["levels"].get(lv, 0) for m in c["levels"]["monthly"]]))
        parts.append(charts.lines("Members per level at each month start (solid baseline, dashed candidate)",
                            months, series))
    flows = [("growth earned", "growth.earned"), ("growth deducted", "growth.deducted"),
             ("points issued", "points.issued"), ("points redeemed", "points.redeemed"),
             ("points expired", "points.expired")]
    parts.append(charts.bars("Growth and points flows", [f for f, _ in flows],
                       [("baseline", [_get(b, p) for _, p in flows]), ("candidate", [_get(c, p) for _, p in flows])]))
    parts.append("<h2>Figures</h2><table><tr><th>metric</th><th>baseline</th><th>candidate</th><th>diff</th></tr>")
    for path, label in SUMMARY:
        x, y = _get(b, path), _get(c, path)
        cls = "pos" if y > x else "neg" if y < x else ""
        parts.append(f"<tr><td>{esc(label)}</td><td>{x:,}</td><td>{y:,}</td><td class=\"{cls}\">{y - x:+,}</td></tr>")
    parts.append("</table>")
    for name, side in (("baseline", b), ("candidate", c)):
        parts.append(f"<h2>Transitions ({name}): level at start → level at end</h2><table><tr><th>from \\ to</th>")
        parts.extend(f"<th>{esc(lv)}</th>" for lv in order)
        parts.append("</tr>")
        for frm in ["(new)"] + order:
            row = side["levels"]["transitions"].get(frm)
            if not row:
                continue
            parts.append(f"<tr><td>{esc(frm)}</td>" + "".join(f"<td>{row.get(lv, 0):,}</td>" for lv in order) + "</tr>")
        parts.append("</table>")
    caps = sorted(set(b["caps"]) | set(c["caps"]))
    if caps:
        parts.append("<h2>Cap hits</h2><table><tr><th>cap</th><th>members (b)</th><th>cut (b)</th>"
                     "<th>members (c)</th><th>cut (c)</th></tr>")
        for cap in caps:
            x, y = b["caps"].get(cap, {}), c["caps"].get(cap, {})
            parts.append(f"<tr><td>{esc(cap)}</td><td>{x.get('members', 0):,}</td><td>{x.get('amount_cut', 0):,}</td>"
                         f"<td>{y.get('members', 0):,}</td><td>{y.get('amount_cut', 0):,}</td></tr>")
        parts.append("</table>")
    if b["tickets"]["created"] or c["tickets"]["created"]:
        parts.append("<h2>Ticket routing</h2><table><tr><th>department / priority</th><th>baseline</th>"
                     "<th>candidate</th></tr>")
        for dept in sorted(set(b["tickets"]["routing"]) | set(c["tickets"]["routing"])):
            for prio in sorted(set(b["tickets"]["routing"].get(dept, {})) | set(c["tickets"]["routing"].get(dept, {}))):
                parts.append(f"<tr><td>{esc(dept)} {esc(prio)}</td>"
                             f"<td>{b['tickets']['routing'].get(dept, {}).get(prio, 0):,}</td>"
                             f"<td>{c['tickets']['routing'].get(dept, {}).get(prio, 0):,}</td></tr>")
        parts.append("</table><h2>Projected SLA breaches</h2><table><tr><th>priority / clock</th><th>baseline</th>"
                     "<th>candidate</th></tr>")
        for prio in sorted(set(b["tickets"]["sla"]) | set(c["tickets"]["sla"])):
            for metric in ("first_response", "resolution"):
                x = b["tickets"]["sla"].get(prio, {}).get(metric, {})
                y = c["tickets"]["sla"].get(prio, {}).get(metric, {})
                parts.append(f"<tr><td>{esc(prio)} {metric}</td><td>{x.get('breached', 0)}/{x.get('measured', 0)}</td>"
                             f"<td>{y.get('breached', 0)}/{y.get('measured', 0)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write(report, rows, out_dir):
    """report.json, report.csv, members.csv, report.txt and report.html in ``out_dir``; returns the paths."""
    import os
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, text in (("report.json", to_json(report)), ("report.csv", to_csv(report)),
                       ("members.csv", members_csv(rows)), ("report.txt", to_text(report)),
                       ("report.html", to_html(report))):
        path = os.path.join(out_dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths[name] = path
    return paths
