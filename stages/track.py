"""Log the whole audit to MLflow: one parent run, a child per stage, the audited model.

    python stages/track.py

The last stage of the pipeline: it depends on every output, so it runs once per new pipeline
state and logs that state once (a state already in the store, logged from this project or from
a clone sharing the server, is not logged again). It writes no file: a pulled clone has nothing
missing, and `dvc status` is clean there; a clone with its own store logs the audit into it with
`dvc repro -f -s track`. Stages never talk to MLflow themselves, so a tracking failure here costs
no result: rerun `dvc repro -f -s track`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from vogflow.stagekit import parser, stage


def main() -> None:
    p = parser(__doc__)
    args = p.parse_args()

    with stage("track", params_path=args.params) as ctx:
        from vogflow import tracking

        if not tracking.enabled():
            print(
                "tracking is off (VOGFLOW_TRACKING=off): nothing is logged; to log this audit "
                "later, run `dvc repro -f -s track`",
                flush=True,
            )
            return
        from vogflow.tracking.record import compose, outputs
        from vogflow.tracking.store import git_state
        from vogflow.tracking.write import log_pipeline_audit, tracking_failed

        lock = yaml.safe_load(Path("dvc.lock").read_text()) or {}
        workspace = Path.cwd()
        prm = ctx.params
        # DVC sets these for every `dvc exp run` (workspace, --temp and queued alike).
        exp_name = os.environ.get("DVC_EXP_NAME")
        record = compose(
            workspace,
            params=yaml.safe_load(Path(args.params).read_text()),
            git=git_state(workspace, generated=outputs(lock)),
            exp_name=exp_name,
            in_experiment=bool(exp_name or os.environ.get("DVC_EXP_BASELINE_REV")),
        )
        model_dir = workspace / "runs" / prm.tracking.register_run / "checkpoints"
        uri = tracking.tracking_uri(ctx.root)
        try:
            logged = log_pipeline_audit(
                record,
                experiment=prm.tracking.experiment,
                model_name=prm.tracking.model_name,
                model_dir=model_dir if model_dir.is_dir() else None,
                uri=uri,
            )
        except store_errors() as err:
            raise tracking_failed(err, uri) from err
        if logged.new:
            print(f"logged audit '{record.name}' as run {logged.run_id} in {uri}", flush=True)
        elif logged.running:
            print(
                f"this pipeline state is being logged by run {logged.run_id} in {uri} (another "
                "clone, still running): not logged twice",
                flush=True,
            )
        else:
            print(
                f"this pipeline state is already logged by run {logged.run_id} in {uri}",
                flush=True,
            )


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that is down, locked or refusing raises (a bug keeps its traceback)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, OSError)


if __name__ == "__main__":
    main()
