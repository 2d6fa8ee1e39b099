"""The audit's identity: a managed identity in Azure, the developer's sign-in locally.

No secrets: in Azure the App Service managed-identity protocol (``IDENTITY_ENDPOINT`` +
``IDENTITY_HEADER``) is used directly, so an unrelated ``AZURE_CLIENT_SECRET`` in the
environment can never change who the audit runs as.
"""

from __future__ import annotations

import os
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential


def build_credential(client_id: str | None = None, **transport: Any) -> TokenCredential:
    """System-assigned identity, or the user-assigned one named by ``AZURE_CLIENT_ID``."""
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        if client_id:
            return ManagedIdentityCredential(client_id=client_id, **transport)
        return ManagedIdentityCredential(**transport)
    return DefaultAzureCredential(managed_identity_client_id=client_id, **transport)
