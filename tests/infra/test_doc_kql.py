"""The Kusto blocks of the docs (docs/security-team.md, docs/design.md, README.md) analyse cleanly.

The blocks are found as the other doc checks find theirs (``tests/unit/test_report.py``).
"""

from __future__ import annotations

import json

from tests.infra.conftest import run_kql_check
from tests.unit.test_report import DOCS, SECURITY_DOC, _blocks


def test_doc_kql_is_valid() -> None:
    queries = {f"{doc.name} kusto block {i}": q for doc in DOCS for i, q in enumerate(_blocks("kusto", (doc,)))}
    assert len(_blocks("kusto", (SECURITY_DOC,))) >= 4 and len(queries) >= 6
    code, result = run_kql_check("--stdin", stdin=json.dumps(queries))
    assert code == 0 and result["ok"], json.dumps(result, indent=2)
