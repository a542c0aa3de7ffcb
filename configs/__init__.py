"""Experiment configs; `python -m invariant_slots.main --config=configs/NAME.py`."""
