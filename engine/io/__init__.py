"""Bytes in and out: storage backends (local folder, S3), age encryption and signatures, artifact streams."""
