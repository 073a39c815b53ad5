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
  tests/test_numerics.py tests/test_vog.py tests/test_gradients.py tests/test_api.py
  tests/test_capture.py tests/test_distributed.py tests/test_streaming.py tests/test_text_inputs.py
  tests/test_rankings.py tests/test_hardness.py tests/test_checkpoints.py tests/test_sources.py
  tests/test_logged_models.py tests/test_integrations.py tests/test_compare_cli.py
  tests/test_hardening_cli.py tests/test_train_ddp.py tests/test_ood.py tests/test_label_issues.py
  tests/test_rank_choice.py tests/test_report.py
)
echo "kernel pass: ATEN_CPU_CAPABILITY=default NPY_DISABLE_CPU_FEATURES='$dispatched'"
ATEN_CPU_CAPABILITY=default NPY_DISABLE_CPU_FEATURES="$dispatched" \
  pytest -m "not slow" "${SCORING_TESTS[@]}" "$@"
