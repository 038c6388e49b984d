"""Persistence: SQLAlchemy 2.0 models and engine wiring (no Flask)."""
