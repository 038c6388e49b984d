"""Schedule templates: stored timepoints <-> domain rules, and the built-in templates."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pro_app.db.models import Assessment, ScheduleTemplate, Study, Timepoint
from pro_app.domain.errors import N_, Conflict, NotFound, ValidationError
from pro_app.domain.schedule import BUILTIN_TEMPLATES, TimepointRule, validate_rules
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


def save_template_rules(
    session: Session, template: ScheduleTemplate, rules: Sequence[TimepointRule], *, actor: str
) -> None:
    """Replace the template's timepoints with ``rules`` (validated), keeping rows by code.

    A timepoint that assessments already refer to cannot be removed (its history must stay
    readable); change its window instead. Existing participants keep their planned dates
    until a protocol date of theirs changes; new participants follow the new template.
    """
    problems = validate_rules(rules)
    if problems:
        first = problems[0]
        raise ValidationError(first.message, field=f"rules-{first.index}-{first.field}", **first.params)
    existing = {tp.code: tp for tp in template.timepoints}
    wanted = {rule.code for rule in rules}
    for code, timepoint in existing.items():
        if code not in wanted:
            used = session.scalar(select(func.count()).select_from(Assessment).where(Assessment.timepoint_id == timepoint.id))
            if used:
                raise Conflict(
                    N_("Timepoint %(code)s has questionnaires and cannot be removed."), field="rules", code=code
                )
    before = [_rule_dict(r) for r in rules_of(template)]
    for code in set(existing) - wanted:
        template.timepoints.remove(existing[code])
    session.flush()
    for position, rule in enumerate(rules):
        timepoint = existing.get(rule.code) or Timepoint(code=rule.code)
        if timepoint.id is None:
            template.timepoints.append(timepoint)
        timepoint.label = rule.label
        timepoint.position = position
        timepoint.anchor_kind = rule.anchor_kind
        timepoint.offset = rule.offset
        timepoint.offset_unit = rule.offset_unit.value
        timepoint.window_before = rule.window_before
        timepoint.window_after = rule.window_after
        timepoint.window_unit = rule.window_unit.value
        timepoint.repeat_every = rule.repeat_every
        timepoint.repeat_until = rule.repeat_until
        timepoint.instrument_code = rule.instrument_code
    session.flush()
    record_event(
        session, actor=actor, action="schedule_template.update", entity_type="schedule_template",
        entity_id=template.id, before={"timepoints": before}, after={"timepoints": [_rule_dict(r) for r in rules]},
    )


def _rule_dict(rule: TimepointRule) -> dict[str, object]:
    return {
        "code": rule.code, "label": rule.label, "anchor": rule.anchor_kind, "offset": rule.offset,
        "offset_unit": rule.offset_unit.value, "before": rule.window_before, "after": rule.window_after,
        "window_unit": rule.window_unit.value, "every": rule.repeat_every, "until": rule.repeat_until,
    }
