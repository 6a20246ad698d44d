"""Server-side charts: inline SVG strings (no script, no font, nothing fetched), for reports and web pages."""
import html

COLOURS = ("#4e79a7", "#f28e2b")


def bars(title, labels, series):
    """A grouped bar chart as an inline SVG string: ``series`` = [(name, [value per label])]."""
    width, height, pad = 640, 260, 40
    top = max([1] + [v for _, vals in series for v in vals])
    n = max(1, len(labels))
    group = (width - 2 * pad) / n
    bw = group / (len(series) + 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" '
           f'aria-label="{html.escape(title)}"><text x="{pad}" y="16" font-size="14">{html.escape(title)}</text>']
    for i, label in enumerate(labels):
        for s, (_, vals) in enumerate(series):
            v = vals[i]
            h = (height - 40) * v / top
            x = pad + i * group + s * bw + bw / 2
            out.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{COLOURS[s % 2]}"><title>{html.escape(str(label))}: {v}</title></rect>')
        out.append(f'<text x="{pad + i * group + group / 2:.1f}" y="{height + 16}" font-size="11" '
                   f'text-anchor="middle">{html.escape(str(label))}</text>')
    for s, (name, _) in enumerate(series):
        out.append(f'<rect x="{width - 150}" y="{24 + s * 16}" width="10" height="10" fill="{COLOURS[s % 2]}"/>'
                   f'<text x="{width - 135}" y="{33 + s * 16}" font-size="11">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def lines(title, labels, series):
    """A line chart as an inline SVG string (a series named ``candidate...`` is dashed)."""
    width, height, pad = 640, 240, 40
    top = max([1] + [v for _, vals in series for v in vals])
    n = max(2, len(labels))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" '
           f'aria-label="{html.escape(title)}"><text x="{pad}" y="16" font-size="14">{html.escape(title)}</text>']
    palette = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")
    for s, (name, vals) in enumerate(series):
        pts = " ".join(f"{pad + i * (width - 2 * pad) / (n - 1):.1f},{height - (height - 40) * v / top:.1f}"
                       for i, v in enumerate(vals))
        dash = ' stroke-dasharray="5,3"' if name.startswith("candidate") else ""
        out.append(f'<polyline fill="none" stroke="{palette[(s // 2) % len(palette)]}" stroke-width="2"{dash} '
                   f'points="{pts}"><title>{html.escape(name)}</title></polyline>')
    for i, label in enumerate(labels):
        out.append(f'<text x="{pad + i * (width - 2 * pad) / (n - 1):.1f}" y="{height + 16}" font-size="10" '
                   f'text-anchor="middle">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
