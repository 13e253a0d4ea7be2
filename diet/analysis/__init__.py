"""Stored records -> tidy frame -> tables, figures and statistics."""
