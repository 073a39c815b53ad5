"""Experiment tracking in MLflow: the only package that imports mlflow.

``store`` says where the record lives and opens it safely; ``record`` composes one audit's record
from the pipeline's files; ``write`` logs audits and comparisons; ``read`` finds audits again.
MLflow itself is imported only inside the functions that use it.
"""

from vogflow.errors import TrackingError
from vogflow.store.connection import (
    check_model_name,
    check_reachable,
    client,
    enabled,
    open_store,
    project_root,
    tracking_uri,
)
from vogflow.tracking.read import (
    DEFAULT_RUN,
    RUN_TAG,
    STAGE_TAG,
    AuditRef,
    audit_params,
    compare_run_url,
    rankings_splits,
    read_rankings,
    resolve_audit,
    seed_rankings,
)
from vogflow.tracking.write import (
    AUDIT_KEY_TAG,
    AUDIT_RUN_TAG,
    KIND_TAG,
    PARENT_TAG,
    log_audit,
    log_compare,
    log_pipeline_audit,
)

__all__ = [
    "AUDIT_KEY_TAG",
    "AUDIT_RUN_TAG",
    "DEFAULT_RUN",
    "KIND_TAG",
    "PARENT_TAG",
    "RUN_TAG",
    "STAGE_TAG",
    "AuditRef",
    "TrackingError",
    "audit_params",
    "check_model_name",
    "check_reachable",
    "client",
    "compare_run_url",
    "enabled",
    "log_audit",
    "log_compare",
    "log_pipeline_audit",
    "open_store",
    "project_root",
    "rankings_splits",
    "read_rankings",
    "seed_rankings",
    "resolve_audit",
    "tracking_uri",
]
