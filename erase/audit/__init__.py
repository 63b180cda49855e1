"""Audits: measure what an erasure removed and what it kept, with the figures and pictures people check."""
