"""The audit's parameters: ``schema`` (the params.yaml sections as typed dataclasses), ``checks``
(their bounds and the pipeline's cross-checks), ``paper`` (the sections of the paper's studies),
``names`` (the names every part agrees on)."""
