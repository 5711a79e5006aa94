"""Report rendering: view model + Jinja2 templates shipped in the wheel."""
