"""Refuse a bad configuration before DVC touches any output.

    python stages/validate.py --out .vogflow/params.ok

The first stage: every other stage depends on its output, so DVC runs it first and stops at its
error, before it removes a single output of a stage that would have failed on the same params.
Its output holds the same bytes whenever the params are valid, so a params change reruns only
the stages that read the changed params.
"""

from __future__ import annotations

from vogflow.common.atomic import write_text
from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="marker file written when the params are valid")
    args = p.parse_args()

    with stage("validate", params_path=args.params) as ctx:
        from vogflow.config.checks import check_pipeline
        from vogflow.tracking import check_model_name, check_reachable, enabled, tracking_uri

        check_pipeline(ctx.params)
        if enabled():  # the audit ends by logging: a store that cannot take it fails now
            check_model_name(ctx.params.tracking.model_name)
            check_reachable(tracking_uri(ctx.root), timeout=3)
        write_text(args.out, "valid\n")


if __name__ == "__main__":
    main()
