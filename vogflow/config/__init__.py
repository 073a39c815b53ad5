"""The audit's parameters: ``schema`` (the params.yaml sections as typed dataclasses), ``names``
(the names every part agrees on)."""
