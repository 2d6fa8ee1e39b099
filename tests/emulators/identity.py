"""The App Service managed-identity endpoint (``GET /msi/token``, protocol 2019-08-01,
``X-IDENTITY-HEADER``) and the bearer check every other route makes: unsigned-in-spirit JWTs (fake
HS256) that Azurite ``--oauth basic`` accepts for storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .wire import _Handler, _Response, arm_error

MI_API_VERSION = "2019-08-01"


@dataclass(frozen=True)
class UserAssignedIdentity:
    """A user-assigned identity the MI endpoint will issue tokens for (selected by any of its ids)."""

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_id: str | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalize_audience(resource: str) -> str:
    """``https://x/.default`` and ``https://x/`` -> ``https://x`` (what a token's ``aud`` carries)."""
    aud = resource.strip()
    if aud.endswith("/.default"):
        aud = aud[: -len("/.default")]
    return aud.rstrip("/")


class IdentityService:
    """The token endpoint and the auth check of :class:`~tests.emulators.arm.ArmEmulator`."""

    def _unauthorized(self, code: str, message: str) -> _Response:
        challenge = (
            'Bearer authorization_uri="https://login.microsoftonline.com/'
            f'{self.tenant.tenant_id}", error="invalid_token", error_description="{message}"'
        )
        return _Response(401, arm_error(code, message), {"WWW-Authenticate": challenge})

    def _check_auth(self, h: _Handler) -> _Response | None:
        header = h.headers.get("Authorization")
        if not header:
            return self._unauthorized(
                "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._unauthorized(
                "AuthenticationFailed", "Authentication failed. The 'Authorization' header is not a Bearer token."
            )
        claims = self.decode_token(token.strip())
        if claims is None:
            return self._unauthorized("InvalidAuthenticationToken", "The access token is invalid.")
        if normalize_audience(str(claims.get("aud", ""))).lower() != self.url.lower():
            return self._unauthorized(
                "InvalidAuthenticationToken",
                f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. "
                f"It should exactly match with one of the allowed audiences '{self.url}/','{self.url}'.",
            )
        if float(claims.get("exp", 0)) < time.time():
            return self._unauthorized(
                "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time."
            )
        h.principal = str(claims.get("oid") or claims.get("appid") or "")
        return None

    def make_token(self, audience: str, *, lifetime: int | None = None, **extra: Any) -> str:
        """Mint a token signed with this emulator's key (tests use it for wrong-audience cases)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": normalize_audience(audience),
            "iss": f"https://sts.windows.net/{self.tenant.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "oid": self.principal_id,
            "sub": self.principal_id,
            "tid": self.tenant.tenant_id,
            "appid": self.client_id,
            "appidacr": "2",
            "idtyp": "app",
            "uti": _b64url(secrets.token_bytes(12)),
            "ver": "1.0",
        }
        claims.update(extra)
        header = _b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "arm-emulator"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(signature)}"

    def decode_token(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this emulator issued, or None (bad shape or foreign signature)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_b64url_decode(parts[2]), expected):
                return None
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, TypeError):
            return None
        return claims if isinstance(claims, dict) else None

    def _token(self, h: _Handler, method: str, query: dict[str, str]) -> _Response:
        def mi_error(status: int, message: str) -> _Response:
            return _Response(status, json.dumps({"statusCode": status, "message": message}).encode())

        if method != "GET":
            return mi_error(405, "Only GET is supported.")
        if h.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return mi_error(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
        if query.get("api-version") != MI_API_VERSION:
            return mi_error(400, f"Unsupported api-version; expected {MI_API_VERSION}.")
        resource = query.get("resource", "")
        if not resource:
            return mi_error(400, "The 'resource' parameter is required.")
        client_id, object_id = self.client_id, self.principal_id
        selector = {k: query[k] for k in ("client_id", "object_id", "mi_res_id", "principal_id") if query.get(k)}
        if selector:
            match = next(
                (
                    ua
                    for ua in self.user_assigned
                    if selector.get("client_id", ua.client_id).lower() == ua.client_id.lower()
                    and selector.get("object_id", selector.get("principal_id", ua.object_id)).lower()
                    == ua.object_id.lower()
                    and ("mi_res_id" not in selector or selector["mi_res_id"].lower() == (ua.resource_id or "").lower())
                ),
                None,
            )
            if match is None:
                return mi_error(
                    400,
                    "No User Assigned or Delegated Managed Identity found for specified "
                    "ClientId/ResourceId/PrincipalId.",
                )
            client_id, object_id = match.client_id, match.object_id
        elif not self.system_assigned:
            return mi_error(400, "No Managed Identity found for the app (system-assigned identity is disabled).")
        token = self.make_token(resource, oid=object_id, sub=object_id, appid=client_id)
        claims = self.decode_token(token) or {}
        with self._stats_lock:
            self.issued_tokens.append(token)
            self.token_requests.append((resource, selector.get("client_id")))
        body = {
            "access_token": token,
            # App Service (2019-08-01) sends epoch seconds as a *string*; MSAL int()s it.
            "expires_on": str(claims.get("exp")),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }
        return _Response(200, json.dumps(body).encode())
