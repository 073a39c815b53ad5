"""The audit's parameters: ``schema`` (the params.yaml sections as typed dataclasses), ``paper``
(the sections of the paper's studies), ``bounds`` (each parameter's limits), ``checks`` (the
pipeline's cross-checks), ``names`` (the names every part agrees on)."""
