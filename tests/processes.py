"""How long a test waits for a process it started.

A limit for a hung process, never an expectation of speed: a test waits on events (an exit
status, a file), and a loaded 2-core machine runs a torchrun job many times slower than an idle
one, so the limit is far above any honest run.
"""

HUNG_AFTER_S = 900
