"""The scenarios of bench/run.py: the engine against pg_dump / pg_restore (compare, with the optional steps
encrypted, s3, drill and restore_jobs in the same rounds), the nightly incremental filestore (nightly), and
how cost grows with the dataset (growth)."""
