"""Checkpoints: the file format and manifest (``files``), recording them from any training loop
(``recorder``), and reading them wherever they are (``sources``: on disk through ``local``, in an
MLflow store through ``stored``); ``logged`` holds the MLflow operations on checkpoints."""
