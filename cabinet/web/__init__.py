"""The cabinet's local web: kiosk page, technician UI and JSON API (see docs/api.md)."""

from .app import WebUI

__all__ = ["WebUI"]
