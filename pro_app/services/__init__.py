"""Use cases of pro-app (enrol, record answers, submit, export, score files, ...).

Services take their inputs explicitly (a Session, paths, streams), flush but never commit, and
raise domain errors rather than HTTP responses, so the web and the CLI share them.
"""
