"""The `operations` target: everyday changes of one table (renames, drops, constraints,
defaults, comments, indexes), each a module that validates itself against the table and
compiles into expand and contract steps (docs/operations-target.md)."""
