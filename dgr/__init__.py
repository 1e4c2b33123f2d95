"""dgr: continual learning with Deep Generative Replay (Shin et al., NIPS 2017) in plain PyTorch.

This package is the science. It never imports ray, mlflow, boto3 or yaml; `pipelines/` adapts it.
"""

__version__ = "0.1.0"
