"""The renter's phone app (an installable PWA, docs/renter-app.md) served by the cloud at ``/app/``.

- ``pages``: the HTML shell of every ``/app/...`` address, the static files (``static/``: vanilla
  ES modules, CSS, the manifest, the service worker, the vendored Leaflet), the CSP;
- ``api``: the two JSON routes the app needs beyond the rest of the public API (one rental as the
  phone follows it, a pass as a QR code), mixed into ``cloud.app``'s handlers and declared in
  ``cloud.api_schema`` like every other route.

The app itself uses only the public JSON API of the OpenAPI document.
"""

from cloud.renter.api import RenterHandlers
from cloud.renter.pages import add_app_routes

__all__ = ["RenterHandlers", "add_app_routes"]
