"""Extension objects, created unbound and attached to an app in ``create_app``."""

from __future__ import annotations

from flask_babel import Babel
from pro_app.web.database import Database
from pro_app.web.signed import KeptTokenCSRFProtect

babel = Babel()
csrf = KeptTokenCSRFProtect()
database = Database()
