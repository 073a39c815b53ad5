#!/usr/bin/env bash
# The scoring tests (quick and integration tiers) on other CPU kernels than this machine picks:
# torch's portable ones (ATEN_CPU_CAPABILITY=default) and numpy's baseline (every dispatched
# SIMD target off: numpy refuses to disable its baseline, so only those are named). A comparison
# of two code paths that holds only on one CPU's kernels fails here. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

dispatched=$(python -c '
import numpy as np
simd = np.show_config(mode="dicts")["SIMD Extensions"]
print(" ".join(simd.get("found", []) + simd.get("not found", [])))')

SCORING_TESTS=(
  tests/test_numerics.py tests/scoring/test_vog.py tests/scoring/test_gradients.py
  tests/api/test_api.py tests/checkpoints/test_capture.py tests/scoring/test_distributed.py
  tests/data/test_streaming.py tests/data/test_text_inputs.py tests/rankings/test_rankings.py
  tests/analysis/test_hardness.py tests/checkpoints/test_checkpoints.py
  tests/checkpoints/test_sources.py tests/checkpoints/test_logged_models.py
  tests/integrations/test_integrations.py tests/cli/test_compare_cli.py
  tests/cli/test_hardening_cli.py tests/training/test_train_ddp.py tests/paper/test_ood.py
  tests/analysis/test_label_issues.py tests/rankings/test_rank_choice.py
  tests/report/test_report.py
)
echo "kernel pass: ATEN_CPU_CAPABILITY=default NPY_DISABLE_CPU_FEATURES='$dispatched'"
ATEN_CPU_CAPABILITY=default NPY_DISABLE_CPU_FEATURES="$dispatched" \
  pytest -m "not slow" "${SCORING_TESTS[@]}" "$@"
