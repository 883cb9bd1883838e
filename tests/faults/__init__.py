"""Faults injected into long runs (issue 27): nothing lost, nothing half-written, resumes do the rest."""
