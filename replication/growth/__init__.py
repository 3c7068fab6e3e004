"""How networks grow: the exact growth primitives, and one file per growth method (`registry` finds them)."""
