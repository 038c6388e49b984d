"""Declarative base with a constraint naming convention (stable names for Alembic)."""

from __future__ import annotations

from enum import StrEnum

from typing import cast

from sqlalchemy import CheckConstraint, MetaData, Table
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def one_of(column: str, values: type[StrEnum], name: str | None = None) -> CheckConstraint:
    """A CHECK constraint limiting ``column`` to the members of ``values``."""
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name or f"{column}_valid")


def table_of(model: type[Base]) -> Table:
    """The model's table, for Core statements on hot paths (typed as the Table it is)."""
    return cast(Table, model.__table__)
