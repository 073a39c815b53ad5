"""The paper's analyses as array-in, array-out functions (numpy, scipy and scikit-learn only)."""
