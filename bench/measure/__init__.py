"""What every scenario of bench/run.py shares: the PostgreSQL connection, timing a command and sampling its
memory, the dataset, the engine's commands, the loopback S3 server and the figures of the report."""

import os

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
OUT_DIR = os.path.join(BENCH, "out")
