"""Training runs for the pipeline: the loop with checkpointing (``train``) and what a finished run
saw (``runs``)."""
