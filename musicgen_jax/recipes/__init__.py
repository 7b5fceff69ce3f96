"""End-to-end recipes built from the project's own commands (the built-in demo model)."""
