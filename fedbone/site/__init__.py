"""One hospital's site, framework-neutral: typed requests in, typed results out.

:class:`Site` holds the site's state and one method per capability;
``requests`` declares what the study may ask. Nothing here knows Flower: the
ClientApp (``sites/app.py``) is an adapter around it.
"""

from fedbone.site.requests import (
    ClassifierEvaluateRequest,
    ClassifierTrainRequest,
    CoxRequest,
    CrossAuditRequest,
    EvaluateRequest,
    GanEvaluateRequest,
    GanRequest,
    OutcomesRequest,
    PairedRequest,
    ReceivedGenerator,
    ReceiveSyntheticRequest,
    SynthesizeRequest,
    TrainRequest,
    UmapRequest,
    ValidateRequest,
)
from fedbone.site.results import (
    OutcomesResult,
    StatisticsSpend,
    StoredPool,
    ValidationResult,
)
from fedbone.site.site import RELEASE_REGISTER_FILE, Site

__all__ = [
    "RELEASE_REGISTER_FILE",
    "ClassifierEvaluateRequest",
    "ClassifierTrainRequest",
    "CoxRequest",
    "CrossAuditRequest",
    "EvaluateRequest",
    "GanEvaluateRequest",
    "GanRequest",
    "OutcomesRequest",
    "OutcomesResult",
    "PairedRequest",
    "ReceiveSyntheticRequest",
    "ReceivedGenerator",
    "Site",
    "StatisticsSpend",
    "StoredPool",
    "SynthesizeRequest",
    "TrainRequest",
    "UmapRequest",
    "ValidateRequest",
    "ValidationResult",
]
