"""The composition layer: DVC stages, Prefect flows, MLflow tracking, registry and pyfunc."""

from fcdd.cli.messages import hide_warning

# The pyfunc model (pipelines/pyfunc.py) takes a DataFrame of base64 images and checks it itself
# (clear HTTP 400s); MLflow's advice to add type hints to its predict, printed in yellow when that
# module is imported, is for this code, not for users.
hide_warning(r"Add type hints to the `predict` method")
