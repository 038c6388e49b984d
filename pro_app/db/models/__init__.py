"""The data model. Import models from here; each lives in the module of its area."""

from pro_app.db.models.alerting import OutboxMessage, StudyAlertRule
from pro_app.db.models.assessment import Alert, Answer, Assessment, Reminder, ScaleScore
from pro_app.db.models.audit import AuditChainHead, AuditEvent
from pro_app.db.models.base import Base
from pro_app.db.models.instrument_text import InstrumentTextRecord
from pro_app.db.models.participant import AccessLink, AnchorEvent, Participant
from pro_app.db.models.receipts import ReceiptKind, ReceiptOutcome, RequestReceipt
from pro_app.db.models.results import AssessmentResult
from pro_app.db.models.staff import StaffUser, staff_sites
from pro_app.db.models.study import Arm, ScheduleTemplate, Site, Study, Timepoint
from pro_app.db.models.throttle import RateLimitBucket

__all__ = [
    "AccessLink",
    "Alert",
    "AnchorEvent",
    "Answer",
    "Arm",
    "Assessment",
    "AssessmentResult",
    "AuditChainHead",
    "AuditEvent",
    "Base",
    "InstrumentTextRecord",
    "OutboxMessage",
    "Participant",
    "RateLimitBucket",
    "ReceiptKind",
    "ReceiptOutcome",
    "Reminder",
    "RequestReceipt",
    "ScaleScore",
    "ScheduleTemplate",
    "Site",
    "StaffUser",
    "StudyAlertRule",
    "Timepoint",
    "Study",
    "staff_sites",
]
