"""Start-up overhead of a whole audit: process start-up time summed over the stages it ran.

Every stage logs ``timing.startup_seconds`` (interpreter, imports, params, tracking store, up to
its first line of work) and ``timing.total_seconds`` to its MLflow child run. This sums them over
the latest audit (the parent run of the last ``dvc repro``):

    python benchmarks/audit_overhead.py [--tracking-uri sqlite:///mlflow.db]
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--experiment", default="vogflow")
    args = p.parse_args()
    client = MlflowClient(tracking_uri=args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    parents = client.search_runs(
        [exp.experiment_id],
        "tags.`vogflow.kind` = 'audit'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise SystemExit("no audit found: run `dvc repro` first")
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    rows = []
    for child in children:
        m = child.data.metrics
        if "timing.total_seconds" in m:
            rows.append(
                (
                    child.data.tags["vogflow.stage"],
                    m["timing.startup_seconds"],
                    m["timing.total_seconds"],
                )
            )
    rows.sort()
    startup = sum(r[1] for r in rows)
    total = sum(r[2] for r in rows)
    print(f"audit {parent.info.run_name} ({parent.info.run_id}): {len(rows)} stages")
    print("| stage | start-up (s) | total (s) |\n|---|---|---|")
    for stage, s, t in rows:
        print(f"| {stage} | {s:.2f} | {t:.2f} |")
    print(f"| **all** | **{startup:.1f}** | **{total:.1f}** |")
    print(f"\nstart-up share: {startup / total:.1%} of {total:.0f} s of stage time")


if __name__ == "__main__":
    main()
