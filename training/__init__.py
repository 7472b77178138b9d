"""Training side: synthetic data, dataset loaders, HAM-Net model, losses and trainer.

Modules that need PyTorch import it themselves, so the data tools work without it.
"""
