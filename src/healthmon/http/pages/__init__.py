"""The status page: a fleet overview at `/` and a page per service, server-rendered
HTML (Jinja2) with a vendored chart library (uPlot), live through the API's event
stream. Served by the HTTP face (`HttpApi`); see docs/status-page.md.
"""

from healthmon.http.pages.views import PAGE_SIZE, StatusPages

__all__ = ["PAGE_SIZE", "StatusPages"]
