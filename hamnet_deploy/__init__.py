"""hamnet-deploy: HAM-Net weakly-supervised temporal action localization, from training to the edge."""

__version__ = "0.1.0"
