"""reasonops: curate a reasoning dataset, fine-tune on it, evaluate the result — on Kubernetes."""

__version__ = "0.1.0"
