"""Schedule templates: stored timepoints <-> domain rules, and the built-in templates."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import ScheduleTemplate, Study, Timepoint
from pro_app.domain.errors import N_, NotFound
from pro_app.domain.schedule import BUILTIN_TEMPLATES, TimepointRule
from pro_app.domain.states import TimeUnit
from pro_app.services.audit import record_event


def rules_of(template: ScheduleTemplate) -> list[TimepointRule]:
    return [
        TimepointRule(
            code=tp.code,
            label=tp.label,
            anchor_kind=tp.anchor_kind,
            offset=tp.offset,
            offset_unit=TimeUnit(tp.offset_unit),
            window_before=tp.window_before,
            window_after=tp.window_after,
            window_unit=TimeUnit(tp.window_unit),
            repeat_every=tp.repeat_every,
            repeat_until=tp.repeat_until,
            instrument_code=tp.instrument_code,
        )
        for tp in template.timepoints
    ]


def load_builtin_template(session: Session, study: Study, key: str, *, actor: str) -> ScheduleTemplate:
    """Copy a built-in template into a study, where it can then be edited."""
    if key not in BUILTIN_TEMPLATES:
        raise NotFound(N_("Unknown schedule template %(name)s."), field="template", name=key)
    name, rules = BUILTIN_TEMPLATES[key]
    template = ScheduleTemplate(study=study, name=name)
    for position, rule in enumerate(rules):
        template.timepoints.append(
            Timepoint(
                code=rule.code,
                label=rule.label,
                position=position,
                anchor_kind=rule.anchor_kind,
                offset=rule.offset,
                offset_unit=rule.offset_unit.value,
                window_before=rule.window_before,
                window_after=rule.window_after,
                window_unit=rule.window_unit.value,
                repeat_every=rule.repeat_every,
                repeat_until=rule.repeat_until,
                instrument_code=rule.instrument_code,
            )
        )
    session.add(template)
    session.flush()
    record_event(
        session, actor=actor, action="schedule_template.create", entity_type="schedule_template",
        entity_id=template.id, after={"study": study.code, "name": name, "builtin": key,
                                      "timepoints": [tp.code for tp in template.timepoints]},
    )
    return template


def study_template(session: Session, study: Study) -> ScheduleTemplate | None:
    """The study's schedule (the first template; studies with several pick per participant later)."""
    return session.scalars(
        select(ScheduleTemplate).where(ScheduleTemplate.study_id == study.id).order_by(ScheduleTemplate.id)
    ).first()
