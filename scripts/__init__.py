"""Repository tooling, run as modules from the repo root (``python -m scripts.matrix``).

Every module here runs on Python >= 3.9 (the oldest matrix cell) with the standard library plus
``tomli`` on Python < 3.11, inside a pixi environment or a plain venv alike.
"""
