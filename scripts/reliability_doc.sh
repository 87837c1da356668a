#!/bin/sh
# Rewrite docs/reliability.md from the cases in tests/bad_inputs.py, as tests/test_reliability.py observes them.
cd "$(dirname "$0")/.." && CROSSNEURON_RELIABILITY_DOC=1 .venv/bin/python -m pytest -q -p no:xdist tests/test_reliability.py
