"""The web layer: one blueprint per role, plus shared request plumbing."""
