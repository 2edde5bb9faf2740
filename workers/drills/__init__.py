"""Failure drills on a private stack: ``featureedit drill`` (see docs/drills.md)."""
