"""Several tables in one plan (`tables:`): each table compiled as its own one-table plan, the
parts merged into one set of phases with one cutover (merge.py); `with_references` finds the
columns referencing a changed key (references.py); prepare.py resolves the tables, checks and
compiles them, from the live catalog or, once started, from the migration's snapshot."""
