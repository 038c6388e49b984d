"""Pure domain model of pro-app: instruments, scoring, alerts and schedules.

Nothing here imports Flask, SQLAlchemy, WTForms or Flask-Babel, and nothing of ours outside
this package, so the clinical rules can be unit-tested (and reused by scripts) without an app
or a database.
"""
