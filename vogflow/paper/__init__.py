"""The paper's replication (Agarwal et al., CVPR 2022), kept apart from the product.

The 2-D toy problem (``toy``, ``toy_run``, Fig. 1), out-of-distribution detection over MNIST-C
corruptions (``corruptions``, ``ood``, ``ood_run``, Table 1), memorization of shuffled labels
(``memorization``, Sec. 4.1), stability across seeds and batch sizes (``stability``, Fig. 6), and
their figures (``figures``). The analyses are arrays in, dicts out; ``*_run`` drive the engine.
"""
