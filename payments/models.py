# Models arrive with their issues: see SPEC.md.
