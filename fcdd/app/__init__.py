"""The inspection page (``fcdd app``): drop images, see where the anomaly is, decide, and record
verdicts as labels the folder dataset reads.

A FastAPI server (``server.py``) over a model catalogue (``catalog.py``), a background scorer of
uploaded images (``jobs.py``), the labels folder (``feedback.py``) and one static page
(``static/``). Importing this package imports neither FastAPI nor the registry: ``command.py``
does that when the page starts (the ``app`` extra: ``pip install 'fcdd[app]'``).
"""
