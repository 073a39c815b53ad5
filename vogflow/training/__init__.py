"""Training runs for the pipeline: ``train`` runs one (``train_run``) over ``loop`` (an epoch),
``resume`` (what an earlier attempt left, verified), ``health`` (divergence and stalls) and
``labels`` (the data fingerprint and ``labels.npz``); ``runs`` reads what a finished run saw."""
