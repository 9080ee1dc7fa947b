"""Who may change what: routes that change or remove stored data, or export it in bulk, need the admin.

The admin is a request with `Authorization: Bearer <ADMIN_TOKEN>` (compared in constant time).
With no ADMIN_TOKEN set, the admin is any loopback client that is not a proxy forwarding for
someone else. Every other route stays as open as before. A refusal is the one error shape:
401 (no or wrong credentials, with `WWW-Authenticate: Bearer`) or 403 (not loopback, no token set).

    @bp.delete("/images/<image_id>")
    @require_admin
    def delete_image(image_id): ...

or, inside a view that needs the admin only for some requests, `ensure_admin()`.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, abort, current_app, request

from blueprints.errors import error_response
from blueprints.instrumentation import client_address

F = TypeVar("F", bound=Callable[..., Any])

REALM = 'Bearer realm="vision"'


def _bearer() -> str | None:
    """Return the token of an `Authorization: Bearer` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_local_client() -> bool:
    """Tell whether the client is on this machine (loopback), and not a proxy forwarding for another."""
    try:
        address = ipaddress.ip_address(client_address())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    # A proxy on this machine (nginx) connects from loopback: when its forwarded header is not
    # trusted (TRUSTED_PROXIES 0), the real client is unknown, so it is not a local user.
    if forwarded and not current_app.config["TRUSTED_PROXIES"]:
        return False
    return address.is_loopback


def admin_denial(action: str = "change stored data") -> Response | None:
    """Return the 401/403 answer for a request that is not the admin's, or None when it is."""
    token = current_app.config.get("ADMIN_TOKEN")
    if token:
        sent = _bearer()
        if sent is None:
            response = error_response(
                401,
                "credentials_required",
                f"Sign in to {action}: send the admin token as 'Authorization: Bearer <token>'.",
            )
            response.headers["WWW-Authenticate"] = REALM
            return response
        if not hmac.compare_digest(sent.encode("utf-8"), token.encode("utf-8")):
            response = error_response(401, "invalid_credentials", "The admin token is not right.")
            response.headers["WWW-Authenticate"] = f'{REALM}, error="invalid_token"'
            return response
        return None
    if is_local_client():
        return None
    return error_response(
        403,
        "admin_only",
        f"Only this machine may {action} while no ADMIN_TOKEN is set; set one to allow it from elsewhere.",
    )


def ensure_admin(action: str = "change stored data") -> None:
    """Stop the request with 401 or 403 unless it is the admin's."""
    denial = admin_denial(action)
    if denial is not None:
        abort(denial)


def require_admin(view: F) -> F:
    """Let only the admin call a view (decorator, under the route's)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        ensure_admin()
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
