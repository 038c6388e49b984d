"""The nurse's home page: what is open, due, closing, missed, submitted, and open alerts."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template
from sqlalchemy import select

from pro_app.db.models import Study
from pro_app.db.types import utcnow
from pro_app.domain.states import Role
from pro_app.extensions import database
from pro_app.services.dashboard import build_dashboard, failed_reminders
from pro_app.services.staff import visible_site_ids
from pro_app.web.staff.guard import staff_required, staff_user

bp = Blueprint("dashboard", __name__, url_prefix="/staff")


@bp.get("/")
@staff_required(Role.ADMIN.value, Role.NURSE.value, Role.ANALYST.value)
def home() -> str:
    user = staff_user()
    # "Today" is the day at the user's (first) site; administrators see the default zone.
    zone = user.sites[0].timezone if user.sites else current_app.config["DEFAULT_TIMEZONE"]
    g.timezone = zone
    now = utcnow()
    sites = visible_site_ids(user)
    board = build_dashboard(database.session, site_ids=sites, now=now, timezone=zone)
    undelivered = failed_reminders(database.session, site_ids=sites, now=now)
    studies = database.session.scalars(select(Study).order_by(Study.code)).all() if user.is_admin else []
    return render_template("staff/dashboard.html", board=board, studies=studies, undelivered=undelivered)
