"""The core: errors, words, configuration, manifests, scope, schedules and retention decisions.

Pure decisions and shared definitions, no I/O beyond reading a configuration file; every other part of the
engine imports from here.
"""
