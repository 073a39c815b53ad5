"""Checkpoints: the file format and manifest (``files``), recording them from any training loop
(``recorder``), and reading them wherever they are (``sources``)."""
