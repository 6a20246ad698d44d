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
    """CSV text of ``rows`` (dicts) with ``columns`` in order, starting with a BOM.

    Args:
        columns: the keys to write, in order.
        rows: dicts (a missing key or None is an empty cell; dicts and lists are written as JSON).
        headers: the header line (default: the column names).
    """
    buf = io.StringIO()
    buf.write(BOM)
    w = csv.writer(buf)  # excel dialect: CRLF line ends, minimal quoting
    w.writerow(headers or columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()
