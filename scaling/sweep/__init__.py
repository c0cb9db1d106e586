"""Budgeted sweeps: plan a study that fits an accelerator-hour budget, run it, resume it.

Modules, one concept each: ``study`` (config files), ``calibrate`` (measured
per-model costs), ``costmodel`` (predicted trial cost), ``lr`` (P23's per-epoch
lr tuning rule), ``planner`` (which trials), ``state`` (atomic files, locks),
``ledger`` (spend from the records), ``executors`` (local, ray), ``progress``
(display), ``runner`` (the loop). The CLI is ``python -m scaling.sweep``.
"""
