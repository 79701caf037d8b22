"""`compress run`: the stage declarations in order (pipeline), what each does (stages), the run's data, resume over
manifest.json, and the checks made before anything is written (preflight).
"""
