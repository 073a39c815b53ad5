"""Log the whole audit to MLflow: one parent run, a child per stage, the audited model.

    python stages/track.py --out .vogflow/logged.json

The last stage of the pipeline: it depends on every output, so it runs once per new pipeline
state and logs that state once (a state already in the store, logged from this project or from
a clone sharing the server, is not logged again). Its output is a small marker of the logged
state, cached and pushed like any output: a clone that pulls the outputs gets it too and its
`dvc status` is clean (`dvc repro -f -s track` logs the pulled audit into another store), while
a plain clone lacks it, so its first `dvc repro` logs the audit into its own store. Stages
never talk to MLflow themselves, so a tracking failure here costs no result: rerun
`dvc repro -f -s track`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument(
        "--out", default=".vogflow/logged.json", help="marker of the logged state (DVC's output)"
    )
    args = p.parse_args()

    with stage("track", params_path=args.params) as ctx:
        from vogflow import tracking
        from vogflow.common.atomic import write_json
        from vogflow.tracking.record import state_key

        lock = yaml.safe_load(Path("dvc.lock").read_text()) or {}
        # Nothing in it varies between reruns of one state (no run id, no time): DVC caches it.
        marker = {"audit_key": state_key(lock), "tracked": tracking.enabled()}
        if not tracking.enabled():
            print(
                "tracking is off (VOGFLOW_TRACKING=off): nothing is logged; to log this audit "
                "later, run `dvc repro -f -s track`",
                flush=True,
            )
            write_json(args.out, marker)
            return
        from vogflow.store.connection import git_state
        from vogflow.tracking.record import compose, outputs
        from vogflow.tracking.write import log_pipeline_audit, tracking_failed

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
        write_json(args.out, marker)


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that is down, locked or refusing raises (a bug keeps its traceback)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, OSError)


if __name__ == "__main__":
    main()
