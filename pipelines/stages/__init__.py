"""DVC stage entry points: ``python -m pipelines.stages.<prepare|train|evaluate|report>`` (see dvc.yaml)."""
