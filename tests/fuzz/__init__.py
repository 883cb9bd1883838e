"""The fuzz campaign (issue 27): seeded, structure-aware inputs from real files, judged from outside."""
