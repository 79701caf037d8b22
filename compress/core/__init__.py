"""The core types every layer shares: the config schema, typed results, the one user error, atomic artifact writes,
the hub guard, the console, stop signals and the process group.
"""
