"""Example plans, shipped with the package so `migrate demo` can run its plan."""
