"""Log the whole audit to MLflow: one parent run, a child per stage, the audited model.

    python stages/track.py --out .vogflow/logged.json

The last stage of the pipeline: it depends on every output, so it runs once per new pipeline
state (and in a fresh clone, whose store is empty), and logs that state once (a state already in
the store is not logged again). Stages never
talk to MLflow themselves, so a tracking failure here costs no result: rerun `dvc repro track`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from vogflow.stagekit import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument(
        "--out", required=True, help="marker of the logged state (absent in a fresh clone)"
    )
    args = p.parse_args()

    with stage("track", params_path=args.params) as ctx:
        from vogflow import tracking
        from vogflow.io import write_json
        from vogflow.tracking.record import state_key

        lock = yaml.safe_load(Path("dvc.lock").read_text()) or {}
        # The marker is a cached output, so a fresh clone (which has the metrics from git but
        # not this file) logs its audit into its own store; it holds nothing that varies.
        marker = {"audit_key": state_key(lock), "tracked": tracking.enabled()}
        if not tracking.enabled():
            print(
                "tracking is off (VOGFLOW_TRACKING=off): nothing is logged; to log this audit "
                "later, run `dvc repro -f track`",
                flush=True,
            )
            write_json(args.out, marker)
            return
        from vogflow.tracking.record import compose, outputs
        from vogflow.tracking.store import git_state
        from vogflow.tracking.write import log_pipeline_audit, tracking_failed

        workspace = Path.cwd()
        prm = ctx.params
        record = compose(
            workspace,
            params=yaml.safe_load(Path(args.params).read_text()),
            git=git_state(workspace, generated=outputs(lock)),
            exp_name=os.environ.get("DVC_EXP_NAME"),
        )
        model_dir = workspace / "runs" / prm.tracking.register_run / "checkpoints"
        uri = tracking.tracking_uri(ctx.root)
        try:
            run_id, new = log_pipeline_audit(
                record,
                experiment=prm.tracking.experiment,
                model_name=prm.tracking.model_name,
                model_dir=model_dir if model_dir.is_dir() else None,
                uri=uri,
            )
        except store_errors() as err:
            raise tracking_failed(err, uri) from err
        if new:
            print(f"logged audit '{record.name}' as run {run_id} in {uri}", flush=True)
        else:
            print(f"this pipeline state is already logged as run {run_id} in {uri}", flush=True)
        write_json(args.out, marker)


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that is down, locked or refusing raises (a bug keeps its traceback)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, OSError)


if __name__ == "__main__":
    main()
