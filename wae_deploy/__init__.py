"""wae-deploy: train, export, build and benchmark WAE-accelerated image classifiers."""

__version__ = "0.1.0"
