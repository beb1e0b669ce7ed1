"""Optimizer knowledge in one place: the catalogue of families and dialects, lookups, slot coverage, graph evidence."""
