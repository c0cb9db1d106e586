"""Packaged study configs: ``--config NAME`` finds ``scaling/studies/NAME.py``.

Each module defines ``get_config(arg=None)`` returning a dict of
``scaling.sweep.study.StudyConfig`` fields. They ship with the package, so a
plain ``pip install`` finds them from any directory; a study of your own is
any ``PATH.py`` with the same function.
"""
