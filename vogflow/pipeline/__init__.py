"""What every pipeline stage (``stages/*.py``) does around its work: validate params first,
one-line errors, timings."""
