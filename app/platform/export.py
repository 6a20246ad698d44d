"""The one CSV writer for downloads: UTF-8 with a byte order mark (Excel on Chinese Windows reads it), CRLF rows."""
import csv
import io
import json

BOM = "\ufeff"


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def csv_text(columns, rows, headers=None):
    """CSV text of ``rows`` with ``columns`` in order, starting with a BOM.

    Args:
        columns: the header names, and the keys to write when rows are dicts.
        rows: dicts (a missing key or None is an empty cell) or sequences in column order; dicts and lists
            inside are written as JSON.
        headers: the header line (default: the column names).
    """
    buf = io.StringIO()
    buf.write(BOM)
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(headers or columns)
    for row in rows:
        cells = [row.get(c) for c in columns] if isinstance(row, dict) else row
        w.writerow([_cell(v) for v in cells])
    return buf.getvalue()


def csv_response(text, filename):
    """A download response for ``csv_text`` output."""
    from flask import Response
    return Response(text.encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Type": "text/csv; charset=utf-8",
                             "Content-Disposition": f"attachment; filename={filename}"})
