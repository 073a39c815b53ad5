"""The product's statistics: error per VoG decile, ranking agreement, hardness baselines, the
scorecard and its verdicts; arrays in, arrays or dicts out (numpy, scipy and scikit-learn only)."""
