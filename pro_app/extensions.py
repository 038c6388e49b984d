"""Extension objects, created unbound and attached to an app in ``create_app``."""

from __future__ import annotations

from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from pro_app.web.database import Database

babel = Babel()
csrf = CSRFProtect()
database = Database()
