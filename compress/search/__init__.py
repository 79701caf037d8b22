"""`compress search`: the fastest student that keeps the user's accuracy budget, found with Optuna.

space.py    what a trial tries (family, shape, KD method, learning rate), asked of Optuna's trial define-by-run
trial.py    what a trial does: time the untrained shape as it would ship, then distil it, halving weak ones
study.py    the study: storage in the run folder (or a URL), the teacher once, resume, the chosen student's run
tables.py   search/trials.csv, trials.json and pareto.png

This package's __init__ stays empty of imports: `compress.search` is also the public function of compress/__init__.py,
which imports this package first so that the function, defined after, keeps the name.
"""
