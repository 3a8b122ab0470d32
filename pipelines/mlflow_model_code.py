"""MLflow "models from code" entry: the logged pyfunc is this file, not a pickle.

Loaded by MLflow with the model's ``code/`` folder (``fcdd/`` and ``pyfunc.py``) on sys.path.
"""

import mlflow

try:
    from pipelines.pyfunc import FCDDPyfunc
except ImportError:  # outside the project: the copy logged with the model
    from pyfunc import FCDDPyfunc

mlflow.models.set_model(FCDDPyfunc())
