"""The web dashboard: a static single-page app the API serves at `/`.

It is plain files (no build step, libraries vendored), talking to `/v1` with the key the user
signs in with, so it needs nothing on the server beyond serving them."""

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

# Everything from this origin only, nothing inline and nothing evaluated (Alpine's CSP build):
# a file name or an event message that holds markup can never run as script.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidated each time (a cheap 304 with the ETag), so an upgraded server's files show at once.
    "cache-control": "no-cache",
}


class _DashboardFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install_dashboard(app: FastAPI) -> None:
    """Mounts the dashboard at `/`. Call it after every other route: a mount at the root
    matches any path, so the routes added before it keep theirs."""
    app.mount("/", _DashboardFiles(directory=STATIC_DIR, html=True), name="dashboard")
