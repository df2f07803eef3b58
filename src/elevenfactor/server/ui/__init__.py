"""The dashboard: server-rendered pages at ``/ui``, served by ``elevenfactor serve``.

Pages are Jinja2 templates rendered on the server (``templates/``) with one stylesheet and a
small script (``static/``) shipped in the wheel: nothing is built at install or run time.
Sign-in, ownership and forms: ``_session`` and ``_page``.
"""

from __future__ import annotations

from elevenfactor.server.ui._render import error_page, not_found_page
from elevenfactor.server.ui._routes import ROUTES, is_ui_path

__all__ = ["ROUTES", "error_page", "is_ui_path", "not_found_page"]
