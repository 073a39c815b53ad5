"""Several processes: launching ranks with torchrun (``launch``) and data-parallel training
(``ddp``)."""
