"""`python -m dynamo.wheel_records`: the environment's RECORD files brought up to date with its files.

pip writes each installed file's sha256 and size into its distribution's RECORD, and SBOM tools (syft's
Python cataloger) and pip read them back as what the image holds. An image build that strips the shared
libraries (the matrix's `strip`) changes both; this rewrites the rows of every file whose content no longer
matches its row, as pip writes them (csv, "\\n" line ends). RECORD files with nothing to change stay as they
were, byte for byte."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
import sysconfig
from pathlib import Path


def digest(data: bytes) -> str:
    """A RECORD hash: sha256, urlsafe base64 without padding (PEP 376, PEP 627)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def rehash(record: Path) -> int:
    """Rewrites the rows of this RECORD whose file (relative to the folder above its .dist-info) differs
    from its hash; rows without a hash (RECORD itself, .pyc) or whose file is gone stay. How many changed."""
    rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
    changed = 0
    for row in rows:
        if len(row) != 3 or not row[1].startswith("sha256="):
            continue
        try:
            data = (record.parent.parent / row[0]).read_bytes()
        except OSError:
            continue
        if digest(data) != row[1]:
            row[1:] = [digest(data), str(len(data))]
            changed += 1
    if changed:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        record.write_text(text.getvalue(), encoding="utf-8")
    return changed


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    records = sorted(site.glob("*.dist-info/RECORD"))
    changed = {record.parent.name: count for record in records if (count := rehash(record))}
    print(f"wheel_records: {sum(changed.values())} row(s) of {len(changed)} of {len(records)} RECORD file(s) "
          f"rewritten to match their files in {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
