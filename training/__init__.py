"""Training side: synthetic data, dataset loaders, HAM-Net model, losses and trainer.

Modules that need PyTorch import it themselves, so the data tools work without it.
"""

if __name__ != "hamnet_deploy.training":  # the folder sits at the top of the checkout
    raise ImportError(f"import hamnet_deploy.training, not {__name__}: the training layer is installed "
                      "as part of the hamnet_deploy package")
