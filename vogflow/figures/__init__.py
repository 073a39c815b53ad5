"""The audit's figures: numpy arrays in, matplotlib figures and PNGs out."""
