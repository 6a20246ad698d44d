"""CSV exports: one format everywhere, UTF-8 with a BOM so Excel (Chinese Windows included) reads the labels."""
import csv
import io

BOM = "\ufeff"


def csv_text(header, rows):
    """CSV text of ``header`` and ``rows`` (None -> empty cell), starting with the UTF-8 BOM."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    return BOM + buf.getvalue()


def csv_response(text, filename):
    """A download response for ``csv_text`` output."""
    from flask import Response
    return Response(text.encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Type": "text/csv; charset=utf-8",
                             "Content-Disposition": f"attachment; filename={filename}"})
