"""Names the templates define that the code prints to people.

The audit identity's role is the custom role of ``infra/tenant/audit-reader-role.bicep``; its display
name is that template's ``roleName`` parameter default. ``tests/unit/test_remediation.py`` reads the template
and fails if the two differ, so guidance never names a role that does not exist.
"""

from __future__ import annotations

#: ``roleName`` default of infra/tenant/audit-reader-role.bicep (assigned at a management group).
AUDIT_READER_ROLE = "Client Certificate Auditor (read-only)"
